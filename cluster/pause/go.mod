module bind9-topology/cluster/pause

go 1.24.0
