"""Linux strong mode: a network namespace per jail, wired so that its traffic can only
reach the proxy and the DNS sinkhole on the host.

`nft.py` renders the nftables rules (pure text, no I/O). The namespace plumbing and the
sequencing that applies the rules are not here yet.
"""
