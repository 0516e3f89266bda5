"""Loom's northbound REST API: Neutron v2.0 subset (networks, subnets, ports) and /v1."""

from controller.rest.app import LoomApi, make_app
from controller.rest.auth import AuthConfigError, NoAuth, Principal, TokenAuth
from controller.rest.server import Serving, make_server, serve

__all__ = [
    "LoomApi",
    "make_app",
    "TokenAuth",
    "NoAuth",
    "Principal",
    "AuthConfigError",
    "make_server",
    "serve",
    "Serving",
]
