"""The Quart-Trio web app, its templates and static files.  Talks to the cluster only through the gateway
client.  May import `gateway` and `proto`.
"""
