"""The built-in routing strategies: ``least-busy`` (default), ``weighted`` and ``latency``."""

from __future__ import annotations

from collections.abc import Callable

from aiport.core.execution.routing import fastest, least_busy, weighted
from aiport.core.hookspecs import hookimpl
from aiport.core.registry import RoutingStrategySpec


@hookimpl
def register_routing_strategies(register: Callable[[RoutingStrategySpec], None]) -> None:
    register(RoutingStrategySpec(name="least-busy", factory=lambda config: least_busy,
                                 description="most free slots, then higher priority"))
    register(RoutingStrategySpec(name="weighted", factory=lambda config: weighted,
                                 description="random, in proportion to each provider's weight"))
    register(RoutingStrategySpec(name="latency", factory=lambda config: fastest,
                                 description="fastest recent answers first"))
