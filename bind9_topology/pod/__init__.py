"""Programs that run inside the pods, shipped to them in the instance's ConfigMap.

They import the standard library and dnspython only (never the rest of this package):
the pod has the BIND image's python3 and python3-dnspython, not this project.
"""
