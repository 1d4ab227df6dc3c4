"""Workflows: steps joined by transitions, validated when the class is created.

A workflow is a class (Elixir: a module using ``Hephaestus.Workflow``)::

    class OrderFlow(Workflow, unique=Unique("orderid")):
        start = ValidateOrder
        transitions = {
            ValidateOrder: {"valid": ProcessPayment, "invalid": RejectOrder},
            ProcessPayment: {"paid": [ChargeCard, ReserveStock]},   # fan-out
            ChargeCard: {"charged": Ship},                          # fan-in at Ship
            ReserveStock: {"reserved": Ship},
            Ship: {"shipped": Done},
            RejectOrder: {"rejected": Done},
        }

A target is a step class, ``(step_class, config)``, or a list of those (a
fan-out). Routes chosen at run time are declared with :func:`transit`. The
graph is built and checked in Rust once, when the class is created; every
problem is reported in one :class:`~hephaestus.errors.WorkflowDefinitionError`.
"""

from __future__ import annotations

import builtins
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from hephaestus._core import Context, Instance, WorkflowGraph
from hephaestus.control import ForEach, Repeat
from hephaestus.errors import DefinitionProblem, WorkflowDefinitionError
from hephaestus.steps import Done, Terminate, is_step_class
from hephaestus.unique import Unique

__all__ = ["Route", "Workflow", "transit"]


@dataclass(frozen=True)
class Route:
    """A transition whose target is chosen at run time (see :func:`transit`).

    Attributes:
        source: The step whose event the route handles.
        event: The event.
        targets: Every step the route may choose; anything else is refused
            when the route runs.
        function: ``function(context) -> target``, where a target is a step
            class or ``(step_class, config)``; with ``many``, also a list
            of those.
        many: Whether the route may choose several targets (a
            multi-choice): the chosen branches run in parallel, the others
            are skipped.
    """

    source: type
    event: str
    targets: tuple[type, ...]
    function: Callable[[Context], Any]
    many: bool = False

    def __call__(self, context: Context) -> Any:
        """Chooses the target (or, with ``many``, the targets) for ``context``."""
        return self.function(context)


def transit(
    source: type, event: str, *, targets: list[type] | tuple[type, ...], many: bool = False
) -> Callable[[Callable[[Context], Any]], Route]:
    """Declares a dynamic route: ``event`` from ``source`` goes where the
    decorated function says, one of ``targets``.

    ::

        @transit(Triage, "routed", targets=[FastTrack, Standard])
        def route(context):
            return FastTrack if context.initial.get("priority") == "high" else Standard

    With ``many=True`` the function may return a list of targets, and every
    chosen branch runs in parallel (a join after them waits only for the
    chosen ones). Like a static fan-out, such a route's targets must join
    before ``Done`` (rule 4).
    """

    def decorate(function: Callable[[Context], Any]) -> Route:
        if not callable(function):
            raise TypeError(f"@transit decorates a function, got {type(function).__name__}")
        if not isinstance(event, str) or not event:
            raise TypeError(f"@transit event must be a non-empty str, got {event!r}")
        if isinstance(targets, (str, bytes)) or not isinstance(targets, (list, tuple)):
            raise TypeError(f"@transit targets must be a list of step classes, got {targets!r}")
        if not isinstance(many, bool):
            raise TypeError(f"@transit many must be a bool, got {many!r}")
        return Route(source, event, tuple(targets), function, many)

    return decorate


def _name(obj: object) -> str:
    return obj.__qualname__ if isinstance(obj, type) else repr(obj)


def _leaf(step: type) -> str | None:
    """Which built-in leaf ``step`` is: ``"terminate"``, ``"done"`` or ``None``."""
    if issubclass(step, Terminate):
        return "terminate"
    return "done" if issubclass(step, Done) else None


def _invalid(name: str, problems: list[DefinitionProblem]) -> WorkflowDefinitionError:
    """One error listing every problem of the workflow ``name``."""
    message = f"{name} is not a valid workflow:" + "".join(f"\n  - {p.message}" for p in problems)
    return WorkflowDefinitionError(message, problems, name)


def _option(name: str, message: str) -> WorkflowDefinitionError:
    """The error for a bad class option (``unique``, ``version``, ...)."""
    return _invalid(name, [DefinitionProblem("option", message)])


def _targets(
    value: object, where: str, workflow: str
) -> list[tuple[type, Any, ForEach | Repeat | None]]:
    """A target (``Step``, ``ForEach(...)``, ``Repeat(...)``, or one of those
    paired with a config) or a list of them, as ``(step, config, node)``."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _option(workflow, f"{where}: an empty list of targets")
    triples: list[tuple[type, Any, ForEach | Repeat | None]] = []
    for item in items:
        target, config = item if isinstance(item, tuple) and len(item) == 2 else (item, None)
        if isinstance(target, (ForEach, Repeat)):
            triples.append((target.step, config, target))
        elif isinstance(target, type):
            triples.append((target, config, None))
        else:
            raise _option(
                workflow,
                f"{where}: a target is a step class, ForEach(...), Repeat(...), one of those "
                f"with a config as (target, config), or a list of those; got {item!r}",
            )
    return triples


class _Nodes:
    """Collects how each step is used (plainly, or wrapped in one node) and
    reports a step used in two ways."""

    def __init__(self) -> None:
        self.nodes: dict[type, ForEach | Repeat] = {}
        self.plain: set[type] = set()
        self.problems: list[DefinitionProblem] = []

    def use(self, step: type, node: ForEach | Repeat | None) -> None:
        known = self.nodes.get(step)
        clash = (
            (node is None and known is not None)
            or (node is not None and step in self.plain)
            or (node is not None and known is not None and known != node)
        )
        if clash:
            ways = {repr(n) for n in (known, node) if n is not None}
            if step in self.plain or node is None:
                ways.add(f"{_name(step)} itself")
            self.problems.append(
                DefinitionProblem(
                    "node_conflict",
                    f"{_name(step)} is used as {' and as '.join(sorted(ways))}; a step is one "
                    "node of the graph, so use it one way",
                    (step,),
                )
            )
        if node is None:
            self.plain.add(step)
        else:
            self.nodes.setdefault(step, node)


def _check_json_safe(value: object, path: str, workflow: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _option(workflow, f"{path}: {value!r} is not JSON-safe")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_safe(item, f"{path}[{index}]", workflow)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _option(workflow, f"{path}: keys must be str, got {key!r}")
            _check_json_safe(item, f"{path}[{key!r}]", workflow)
        return
    raise _option(workflow, f"{path}: {type(value).__name__} is not JSON-safe")


class Workflow:
    """Base class of workflows; see the module docs.

    Class options (keywords in the class statement): ``unique`` (required, a
    :class:`~hephaestus.Unique`), ``version`` (a positive int, default 1),
    ``tags`` (strings), ``metadata`` (a JSON-safe dict), or ``versions`` and
    ``current`` for a dispatcher over several versions of one workflow.

    Attributes:
        graph: The validated graph (for a dispatcher, the current version's).
            It holds the steps, the transitions and the dynamic routes.
        version: The workflow's version (a dispatcher's current version).
        unique: How instances are identified by business key.
        tags: Free-form labels.
        metadata: Free-form JSON-safe data.
        versions: A dispatcher's versions by number; ``None`` otherwise.
    """

    graph: ClassVar[WorkflowGraph]
    version: ClassVar[int]
    unique: ClassVar[Unique]
    tags: ClassVar[tuple[str, ...]]
    metadata: ClassVar[dict[str, Any]]
    versions: ClassVar[dict[int, type[Workflow]] | None] = None
    current: ClassVar[int | None] = None
    #: The ForEach and Repeat nodes of the graph, by the step they wrap.
    _nodes: ClassVar[dict[type, ForEach | Repeat]] = {}

    def __init_subclass__(
        cls,
        *,
        unique: Unique | None = None,
        version: int | None = None,
        tags: tuple[str, ...] | list[str] = (),
        metadata: Mapping[str, Any] | None = None,
        versions: Mapping[int, type[Workflow]] | None = None,
        current: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__qualname__
        if unique is None:
            raise _option(name, "unique=Unique(...) is required")
        if not isinstance(unique, Unique):
            raise _option(name, f"unique must be a Unique, got {unique!r}")
        if isinstance(tags, str) or not all(isinstance(tag, str) for tag in tags):
            raise _option(name, f"tags must be strings, got {tags!r}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise _option(name, f"metadata must be a dict, got {metadata!r}")
        _check_json_safe(dict(metadata or {}), "metadata", name)
        cls.unique = unique
        cls.tags = tuple(tags)
        cls.metadata = dict(metadata or {})
        if versions is not None:
            if version is not None:
                raise _option(name, "give either version or versions, not both")
            cls._dispatch(versions, current)
            return
        if current is not None:
            raise _option(name, "current is only for versions=...")
        if version is None:
            version = 1
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _option(name, f"version must be a positive int, got {version!r}")
        cls.version = version
        cls.versions = None
        cls.current = None
        cls.graph = cls._build_graph()

    @classmethod
    def _dispatch(cls, versions: Mapping[int, type[Workflow]], current: int | None) -> None:
        """Validates a dispatcher's versions (the original's umbrella rules)."""
        name = cls.__qualname__
        if not isinstance(versions, Mapping) or not versions:
            raise _option(name, "versions must be a non-empty dict")
        problems: list[str] = []
        for number, member in versions.items():
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                problems.append(f"version {number!r} is not a positive int")
            elif not (isinstance(member, type) and issubclass(member, Workflow)):
                problems.append(f"version {number} is {member!r}, not a Workflow")
            elif member.versions is not None:
                problems.append(f"version {number} ({_name(member)}) is itself a dispatcher")
            elif member.version != number:
                problems.append(
                    f"version {number} is {_name(member)}, whose version is {member.version}"
                )
        if current is None:
            problems.append("current is required with versions")
        elif current not in versions:
            problems.append(f"current={current!r} is not one of the versions {sorted(versions)}")
        if problems:
            raise _invalid(name, [DefinitionProblem("option", p) for p in problems])
        assert current is not None
        cls.versions = dict(versions)
        cls.current = current
        cls.version = current
        cls.graph = versions[current].graph
        cls._nodes = versions[current]._nodes

    @classmethod
    def _build_graph(cls) -> WorkflowGraph:
        name = cls.__qualname__
        # The body's `start` moves into `graph.start`, so that `cls.start`
        # is the runtime facade; a subclass without one keeps its base's.
        nodes = _Nodes()
        if "start" in cls.__dict__:
            start_targets = _targets(cls.__dict__["start"], "start", name)
            delattr(cls, "start")
        else:
            inherited = next((b for b in cls.__mro__[1:] if "graph" in b.__dict__), None)
            if inherited is None:
                raise _option(name, "a workflow needs a start step")
            graph = inherited.__dict__["graph"]
            start_targets = [
                (graph.start, graph.start_config, inherited.__dict__["_nodes"].get(graph.start))
            ]
        if len(start_targets) != 1:
            raise _option(name, "start: one start step, not a list")
        start, start_config, start_node = start_targets[0]
        nodes.use(start, start_node)
        table = getattr(cls, "transitions", {})
        if not isinstance(table, Mapping):
            raise _option(name, f"transitions must be a dict, got {table!r}")
        steps: dict[type, None] = {start: None}
        edges: list[tuple[type, str, list[tuple[type, Any]], Route | None, bool]] = []
        problems: list[DefinitionProblem] = []
        for source, by_event in table.items():
            if not isinstance(by_event, Mapping):
                problems.append(
                    DefinitionProblem(
                        "option", f"transitions[{_name(source)}] must be a dict of event -> target"
                    )
                )
                continue
            steps.setdefault(source, None)
            for event, target in by_event.items():
                if not isinstance(event, str) or not event:
                    problems.append(
                        DefinitionProblem(
                            "option", f"transitions[{_name(source)}]: event {event!r} is not a str"
                        )
                    )
                    continue
                triples = _targets(target, f"transitions[{_name(source)}][{event!r}]", name)
                for step, _, node in triples:
                    steps.setdefault(step, None)
                    nodes.use(step, node)
                edges.append((source, event, [(s, c) for s, c, _ in triples], None, False))
        for route in (v for v in vars(cls).values() if isinstance(v, Route)):
            steps.setdefault(route.source, None)
            where = f"the route {route.function.__name__}"
            declared = _targets(list(route.targets), where, name)
            configured = [step for step, config, _ in declared if config is not None]
            if configured:
                raise _option(
                    name,
                    f"{where}: a route's targets take no config (its target gets none); "
                    f"got one for {', '.join(s.__qualname__ for s in configured)}",
                )
            for step, _, node in declared:
                steps.setdefault(step, None)
                nodes.use(step, node)
            edges.append(
                (route.source, route.event, [(s, None) for s, _, _ in declared], route, route.many)
            )
        problems.extend(
            DefinitionProblem(
                "not_a_step",
                f"{_name(s)} is not a Step subclass",
                (s,) if isinstance(s, type) else (),
            )
            for s in steps
            if not is_step_class(s)
        )
        problems.extend(nodes.problems)
        if problems:
            raise _invalid(name, problems)
        specs = [
            (
                step,
                tuple(step.events),
                _leaf(step),
                step.join,
                nodes.nodes[step].spec() if step in nodes.nodes else None,
            )
            for step in steps
            if is_step_class(step)
        ]
        graph = WorkflowGraph(name, start, start_config, specs, edges)
        cls._nodes = nodes.nodes
        return graph

    @classmethod
    def resolve_version(
        cls, version: int | None = None, **options: Any
    ) -> tuple[int, type[Workflow]]:
        """The version to run and its workflow class.

        With ``version``, that version (``ValueError`` if there is none such);
        without, :meth:`version_for` decides, and its ``None`` means the
        current version.
        """
        versions = cls.versions if cls.versions is not None else {cls.version: cls}
        chosen = cls.version_for(versions, options) if version is None else version
        if chosen is None:
            chosen = cls.current if cls.current is not None else cls.version
        if chosen not in versions:
            raise ValueError(
                f"{cls.__qualname__} has no version {chosen!r}; it has {sorted(versions)}"
            )
        return chosen, versions[chosen]

    @classmethod
    def version_for(
        cls, versions: Mapping[int, type[Workflow]], options: Mapping[str, Any]
    ) -> int | None:
        """Picks the version for a new instance; override to route by ``options``.

        The default is the current version; ``None`` also means the current
        version (as in the original).
        """
        return cls.current if cls.current is not None else cls.version

    # -- the runtime facade (CONTRACT §10): on the current app ------------------------

    if TYPE_CHECKING:
        # A workflow body assigns its start step to `start`, which type checkers
        # then take as the type of `Flow.start`; `Any` keeps those bodies valid.
        # In typed code, start through the app: `app.start_instance(Flow, ...)`.
        start: ClassVar[Any]

    @classmethod  # type: ignore[no-redef]
    def start(cls, value: str, context: Mapping[str, Any] | None = None) -> str:
        """Starts an instance for the business value ``value`` on the current
        app (the innermost ``with Hephaestus(...)`` block, else a default app)
        and returns its id, ``unique.build_id(value)``. With scope ``"none"``
        the id carries a random suffix (``key::value::1a2b3c4d``).

        Raises:
            AlreadyRunningError: An unfinished instance holds the id.
        """
        from hephaestus.runtime.app import current_app

        return current_app().start_instance(cls, context, id=cls._new_id(value))

    @classmethod
    def _new_id(cls, value: str) -> str:
        """The id a new instance for ``value`` gets (suffixed for scope ``"none"``)."""
        iid = cls.unique.build_id(value)
        if cls.unique.scope == "none":
            iid = f"{iid}::{secrets.token_hex(4)}"
        return iid

    @classmethod
    def _facade_id(cls, value: str, operation: str) -> str:
        if cls.unique.scope == "none":
            raise TypeError(
                f"{cls.__qualname__}.{operation}: with scope 'none' an id is not a business "
                "key; use the app's operations with the id start() returned"
            )
        return cls.unique.build_id(value)

    @classmethod
    def resume(cls, value: str, event: str, step: type | None = None) -> None:
        """Delivers ``event`` to the waiting step of this workflow's instance
        for ``value`` (see ``Hephaestus.resume``)."""
        from hephaestus.runtime.app import current_app

        current_app()._resume(cls._facade_id(value, "resume"), event, step, cls)

    @classmethod
    def get(cls, value: str) -> Instance:
        """This workflow's newest instance for ``value``."""
        from hephaestus.runtime.app import current_app

        return current_app()._get(cls._facade_id(value, "get"), cls)

    @classmethod
    def cancel(cls, value: str, reason: Any = None) -> Instance:
        """Cancels this workflow's newest instance for ``value``."""
        from hephaestus.runtime.app import current_app

        return current_app()._cancel(cls._facade_id(value, "cancel"), reason, cls)

    @classmethod
    def list(cls, **filters: Any) -> builtins.list[Instance]:
        """This workflow's instances, newest first (filters as
        ``Hephaestus.list``: ``status``, ``version``, ``id``, ``limit``)."""
        from hephaestus.runtime.app import current_app

        if "workflow" in filters:
            raise TypeError(f"{cls.__qualname__}.list() lists its own instances; no workflow=")
        return current_app().list(workflow=cls, **filters)
