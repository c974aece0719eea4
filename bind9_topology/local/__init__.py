"""The local runner: a topology in local `named` processes on loopback."""
