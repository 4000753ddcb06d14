"""grpclib services (the client `Ticketing` API and the peer `Raft` API), the peer-message codec, the Python
client library and the `railraft` command line.  May import `actors`, `store` and `proto`.
"""
