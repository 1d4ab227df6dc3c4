"""The Workflow Control-Flow Patterns (van der Aalst, ter Hofstede, Russell et
al.; the revised view of 2006) WCP-1 ... WCP-21 and WCP-43, each written with
the public API in the most natural way it allows, and each checked for its
defining behaviour in the pure engine. The workflows live in
``pattern_flows``.

"direct" means the pattern is one construct of the API; "workaround" means it
takes a combination of constructs (or data) that the pattern itself does not
ask for; "not supported" means it cannot be expressed.

======  ===================================  ==========================================
WCP     Pattern                              In hephaestus
======  ===================================  ==========================================
1       Sequence                             direct: ``A: {"ev": B}``
2       Parallel split                       direct: a list of targets,
                                             ``A: {"ev": [B, C]}``; under ``arun`` and
                                             the runtime the branches run concurrently
3       Synchronization                      direct: a step with several predecessors
                                             waits for every branch of a fan-out (the
                                             join rule)
4       Exclusive choice                     direct: one event per branch
                                             (``{"yes": B, "no": C}``), or a dynamic
                                             route ``@transit(A, "ev", targets=[B, C])``
5       Simple merge                         direct: a step after exclusive branches runs
                                             once, after whichever branch ran (the join
                                             rule counts the skipped ones as done)
6       Multi-choice                         direct: ``@transit(..., many=True)``
                                             returning a list of targets
7       Structured synchronizing merge       direct: the join after a ``many=True`` route
                                             waits only for the chosen branches
8       Multi-merge                          workaround (how): a step runs at most once
                                             per instance, so the shared tail is written
                                             once as a class and subclassed once per
                                             branch (each copy is its own node)
9       Structured discriminator             workaround (how): ``join = "first"`` fires on
                                             the first arrival but *withdraws* the other
                                             branches (that is WCP-29, the cancelling
                                             discriminator); to let them finish, each
                                             branch signals the join on a side branch and
                                             also goes on to a later all-join
10      Arbitrary cycles                     not supported (why): by design the graph is
                                             validated acyclic when the class is created
                                             (``WorkflowDefinitionError``); loops are
                                             structured, one step wrapped in ``Repeat``
11      Implicit termination                 direct: an instance completes when no step is
                                             active or waiting; there is no single end
                                             node (exclusive paths may end in leaves of
                                             their own; concurrent branches must join
                                             before ``Done`` unless they may ``Terminate``)
12      MI without synchronization           workaround (how): ``ForEach`` always
                                             synchronizes its runs, so it goes on a
                                             parallel branch of its own that meets the
                                             main thread only at the final join
13      MI with design-time knowledge        direct: ``ForEach(step, items=f)``, ``f``
                                             returning a fixed list
14      MI with a-priori run-time knowledge  direct: ``ForEach(step, items="key")`` or
                                             ``items=f(context)``, taken when the node
                                             activates
15      MI without a-priori run-time         workaround (how): ``ForEach`` fixes its items
        knowledge                            when it activates, so a ``Repeat`` works
                                             through a list that grows as it runs; the
                                             instances then run one after another, not
                                             concurrently
16      Deferred choice                      direct: the branches' first steps wait
                                             (``WaitForEvent``, ``Wait``) and lead into a
                                             ``join = "first"`` step; resuming one
                                             withdraws the others at once, and the join's
                                             event leads on to that branch's own steps
17      Interleaved parallel routing         workaround (how): ``engine.run`` happens to
                                             run one step at a time, but ``arun`` and the
                                             runtime overlap fan-out branches; the tasks
                                             become the items of one
                                             ``ForEach(..., concurrency=1)``, in an order
                                             chosen at run time
18      Milestone                            workaround (how): no state-based enabling; a
                                             dynamic route reads the other branch's
                                             progress in ``context.steps`` when the
                                             request arrives and picks the task or a
                                             refusal
19      Cancel task                          direct: the task and its cancel trigger race
                                             into a ``join = "first"`` step; the trigger
                                             withdraws the task (not started: never runs;
                                             waiting: stops waiting; running under
                                             ``arun``: cancelled)
20      Cancel case                          direct: the runtime's ``cancel`` (``FAILED``,
                                             ``error["kind"] == "cancelled"``); in the
                                             pure engine ``engine.fail`` (kind
                                             ``"error"``): every active and waiting step
                                             is removed, nothing runs any more
21      Structured loop                      direct: ``Repeat(step, again="ev",
                                             max_iterations=n)`` (a post-test loop; each
                                             run has its own history entry)
43      Explicit termination                 direct: ``Terminate``, a leaf that completes
                                             the instance and withdraws everything else
======  ===================================  ==========================================

15 of the 22 are direct (1-7, 11, 13, 14, 16, 19, 20, 21, 43), six take a
workaround (8, 9, 12, 15, 17, 18) and one is not supported by design (10).
Beyond the 22: ``join = "first"`` is WCP-29 (cancelling discriminator) directly.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pattern_flows as pf
import pytest
from hephaestus import (
    Done,
    Hephaestus,
    Instance,
    InvalidTransitionError,
    MemoryStorage,
    Ok,
    Repeat,
    Status,
    Step,
    Terminate,
    Unique,
    Workflow,
    WorkflowDefinitionError,
    engine,
    step_key,
)


@pytest.fixture(autouse=True)
def _clear() -> None:
    pf.RAN.clear()


def new(workflow: type, context: dict[str, Any] | None = None) -> Instance:
    return Instance.new(workflow, 1, context or {}, "case::1")


def ran() -> list[str]:
    """What executed so far (see ``pattern_flows``)."""
    return list(pf.RAN)


def history(instance: Instance) -> list[str]:
    return [entry.step_ref.__name__ for entry in instance.execution_history]


def fire(instance: Instance, step: type) -> Instance:
    """Executes the active ``step`` and applies its result by the public calls."""
    result = engine.execute_step(instance, step)
    assert isinstance(result, Ok)
    instance = engine.complete_step(instance, step, result.event, result.context_updates)
    return engine.activate_transitions(instance, step, result.event)


def started(workflow: type, context: dict[str, Any] | None = None) -> Instance:
    """A new instance, advanced and with its start step executed."""
    instance = engine.advance(new(workflow, context))
    (first,) = instance.active_steps
    return fire(instance, first)


# -- WCP-1 sequence ----------------------------------------------------------------------------


def test_wcp1_sequence() -> None:
    instance = engine.advance(new(pf.SequenceFlow))
    assert instance.active_steps == {pf.ReceiveOrder}
    instance = fire(instance, pf.ReceiveOrder)
    assert instance.active_steps == {pf.PickItems}, "the next step only once the previous is done"
    instance = fire(instance, pf.PickItems)
    assert instance.active_steps == {pf.PackParcel}

    pf.RAN.clear()
    done = engine.run(new(pf.SequenceFlow))
    assert done.status is Status.COMPLETED
    assert ran() == ["ReceiveOrder", "PickItems", "PackParcel"]
    assert history(done) == ["ReceiveOrder", "PickItems", "PackParcel", "Done"]


# -- WCP-2 parallel split ----------------------------------------------------------------------


def test_wcp2_parallel_split() -> None:
    instance = started(pf.ParallelFlow)
    assert instance.active_steps == {pf.ChargeCard, pf.ReserveStock}, "both branches at once"
    assert instance.status is Status.RUNNING


def test_wcp2_parallel_split_branches_run_concurrently_under_arun() -> None:
    done = asyncio.run(engine.arun(new(pf.ParallelFlow)))
    assert done.status is Status.COMPLETED
    # Both branches started before either finished.
    assert ran()[0] == "PlaceOrder"
    assert set(ran()[1:3]) == {"ChargeCard:start", "ReserveStock:start"}
    assert set(ran()[3:5]) == {"ChargeCard:end", "ReserveStock:end"}
    assert ran()[5:] == ["Ship"]


# -- WCP-3 synchronization ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [(pf.ChargeCard, pf.ReserveStock), (pf.ReserveStock, pf.ChargeCard)],
    ids=["charge-first", "reserve-first"],
)
def test_wcp3_synchronization(first: type, second: type) -> None:
    instance = started(pf.ParallelFlow)
    instance = fire(instance, first)
    assert instance.active_steps == {second}, "Ship waits for the other branch"
    instance = fire(instance, second)
    assert instance.active_steps == {pf.Ship}
    done = engine.run(instance)
    assert done.status is Status.COMPLETED
    assert ran().count("Ship") == 1
    assert history(done)[-2:] == ["Ship", "Done"]


def test_wcp3_synchronization_under_run() -> None:
    done = engine.run(new(pf.ParallelFlow))
    assert done.status is Status.COMPLETED
    assert ran().index("Ship") > max(ran().index("ChargeCard:end"), ran().index("ReserveStock:end"))
    assert done.completed_steps == {pf.PlaceOrder, pf.ChargeCard, pf.ReserveStock, pf.Ship, Done}


# -- WCP-4 exclusive choice, WCP-5 simple merge ------------------------------------------------

DECISIONS = [("approve", pf.Approve, pf.Reject), ("reject", pf.Reject, pf.Approve)]


@pytest.mark.parametrize(("decision", "taken", "other"), DECISIONS, ids=["approve", "reject"])
def test_wcp4_exclusive_choice(decision: str, taken: type, other: type) -> None:
    instance = started(pf.ExclusiveFlow, {"assess": decision})
    assert instance.active_steps == {taken}
    assert other in instance.skipped_steps, "the branch not chosen is skipped at once"
    done = engine.run(instance)
    assert done.status is Status.COMPLETED
    assert ran() == ["Assess", taken.__name__, "Notify"]
    assert other not in done.completed_steps


@pytest.mark.parametrize(
    ("priority", "taken", "other"),
    [("high", pf.FastTrack, pf.Standard), ("low", pf.Standard, pf.FastTrack)],
)
def test_wcp4_exclusive_choice_on_data_by_a_route(priority: str, taken: type, other: type) -> None:
    done = engine.run(new(pf.RoutedFlow, {"priority": priority}))
    assert done.status is Status.COMPLETED
    assert ran() == ["Triage", taken.__name__]
    assert done.skipped_steps == {other}


@pytest.mark.parametrize(("decision", "taken", "other"), DECISIONS, ids=["approve", "reject"])
def test_wcp5_simple_merge(decision: str, taken: type, other: type) -> None:
    instance = started(pf.ExclusiveFlow, {"assess": decision})
    instance = fire(instance, taken)
    assert instance.active_steps == {pf.Notify}, "the merge does not wait for the skipped branch"
    done = engine.run(instance)
    assert done.status is Status.COMPLETED
    assert ran().count("Notify") == 1
    assert history(done) == ["Assess", taken.__name__, "Notify", "Done"]
    assert done.context.steps["notify"] == {"seen": sorted(["assess", step_key(taken)])}


# -- WCP-6 multi-choice, WCP-7 structured synchronizing merge ---------------------------------


@pytest.mark.parametrize(
    ("channels", "skipped"),
    [
        (["email"], {pf.Sms, pf.Page}),
        (["email", "page"], {pf.Sms}),
        (["sms", "page"], {pf.Email}),
        (["email", "sms", "page"], set()),
    ],
)
def test_wcp6_multi_choice(channels: list[str], skipped: set[type]) -> None:
    instance = started(pf.AlertFlow, {"channels": channels})
    chosen = {pf.Email, pf.Sms, pf.Page} - skipped
    assert instance.active_steps == chosen, "every chosen branch at once"
    assert instance.skipped_steps == skipped
    done = engine.run(instance)
    assert done.status is Status.COMPLETED
    assert sorted(ran()[1:-1]) == sorted(step.__name__ for step in chosen)
    assert done.skipped_steps == skipped


def test_wcp7_structured_synchronizing_merge_waits_for_each_chosen_branch() -> None:
    instance = started(pf.AlertFlow, {"channels": ["email", "page"]})
    instance = fire(instance, pf.Email)
    assert instance.active_steps == {pf.Page}, "Gather waits for Page, not for the skipped Sms"
    instance = fire(instance, pf.Page)
    assert instance.active_steps == {pf.Gather}
    done = engine.run(instance)
    assert ran() == ["RaiseAlert", "Email", "Page", "Gather"]
    assert done.status is Status.COMPLETED


def test_wcp7_structured_synchronizing_merge_after_one_chosen_branch() -> None:
    instance = started(pf.AlertFlow, {"channels": ["sms"]})
    instance = fire(instance, pf.Sms)
    assert instance.active_steps == {pf.Gather}, "one branch chosen: nothing else to wait for"
    done = engine.run(instance)
    assert ran() == ["RaiseAlert", "Sms", "Gather"]
    assert done.skipped_steps == {pf.Email, pf.Page}


# -- WCP-8 multi-merge (workaround) -----------------------------------------------------------


def test_wcp8_multi_merge_by_a_tail_per_branch() -> None:
    done = engine.run(new(pf.MultiMergeFlow))
    assert done.status is Status.COMPLETED
    # The shared tail ran once for each incoming branch, each time on its own.
    assert [r for r in ran() if r.startswith("Audit")] == ["Audit:credit", "Audit:debit"]
    assert done.context.steps["audit_credit"] == {"branch": "credit"}
    assert done.context.steps["audit_debit"] == {"branch": "debit"}
    assert history(done) == [
        "Transfer",
        "Credit",
        "Debit",
        "AuditCredit",
        "AuditDebit",
        "CloseTransfer",
        "Done",
    ]


def test_wcp8_a_step_reached_by_two_branches_runs_once() -> None:
    # Why multi-merge needs the workaround: a second arrival at a step does not
    # start it again; the step is a join.
    done = engine.run(new(pf.ParallelFlow))
    assert ran().count("Ship") == 1
    assert [e.step_ref for e in done.execution_history].count(pf.Ship) == 1


# -- WCP-9 structured discriminator (workaround) --------------------------------------------


def test_wcp9_structured_discriminator() -> None:
    instance = started(pf.DiscriminatorFlow)
    instance = fire(instance, pf.CheckBreathing)
    instance = fire(instance, pf.BreathingSeen)
    # The first signal starts triage; the other check goes on.
    assert instance.active_steps == {pf.CheckPulse, pf.Triage9}
    assert instance.skipped_steps == {pf.PulseSeen}, "only the late signal is withdrawn"
    instance = fire(instance, pf.Triage9)
    assert instance.active_steps == {pf.CheckPulse}, "Handover still waits for the pulse check"
    done = engine.run(instance)
    assert done.status is Status.COMPLETED
    assert pf.CheckPulse in done.completed_steps, "the other branch completed"
    assert ran().count("Triage") == 1, "and its completion did not start triage again"
    assert done.context.steps["triage"]["seen"] == ["alarm", "breathing_seen", "check_breathing"]
    assert history(done)[-2:] == ["Handover", "Done"]


def test_wcp9_structured_discriminator_under_arun() -> None:
    done = asyncio.run(engine.arun(new(pf.DiscriminatorFlow)))
    assert done.status is Status.COMPLETED
    # Triage started while the pulse check was still running, and the check
    # was allowed to finish; its signal was ignored.
    assert ran().index("CheckPulse:start") < ran().index("Triage") < ran().index("CheckPulse:end")
    assert ran().count("Triage") == 1
    assert pf.CheckPulse in done.completed_steps
    assert done.skipped_steps == {pf.PulseSeen}
    assert ran()[-1] == "Handover"


def test_wcp9_a_bare_first_wins_join_cancels_the_other_branch() -> None:
    # join = "first" straight after the branches is WCP-29 (the cancelling
    # discriminator): the slower check is withdrawn, not ignored.
    done = engine.run(new(pf.CancellingDiscriminatorFlow))
    assert done.status is Status.COMPLETED
    assert ran() == ["Alarm", "CheckBreathing", "FirstTriage"]
    assert done.skipped_steps == {pf.CheckPulse}

    pf.RAN.clear()
    done = asyncio.run(engine.arun(new(pf.CancellingDiscriminatorFlow)))
    assert "CheckPulse:start" in ran()
    assert "CheckPulse:end" not in ran(), "the running check was cancelled"
    assert done.skipped_steps == {pf.CheckPulse}


# -- WCP-10 arbitrary cycles (not supported) ------------------------------------------------


class Review(Step):
    events = ("accepted", "revise")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        pf.RAN.append("Review")
        return "accepted" if ran().count("Review") == 3 else "revise"


class Revise(Step):
    events = ("revised",)


def test_wcp10_arbitrary_cycles_are_refused_when_the_class_is_created() -> None:
    with pytest.raises(WorkflowDefinitionError) as info:

        class Cyclic(Workflow, unique=Unique("cyclic")):
            start = Review
            transitions = {
                Review: {"accepted": Done, "revise": Revise},
                Revise: {"revised": Review},
            }

    assert [problem.kind for problem in info.value.problems] == ["cycle"]
    assert "cycle: Review -> Revise -> Review" in str(info.value)

    with pytest.raises(WorkflowDefinitionError, match="cycle: Review -> Review"):

        class SelfLoop(Workflow, unique=Unique("selfloop")):
            start = Review
            transitions = {Review: {"accepted": Done, "revise": Review}}


def test_wcp10_a_loop_is_one_step_wrapped_in_repeat() -> None:
    # The structured alternative: the body of the loop is one node, so a loop
    # over several steps, or one with a second entry, cannot be written.
    class Structured(Workflow, unique=Unique("structured")):
        start = Repeat(Review, again="revise", max_iterations=5)
        transitions = {Review: {"accepted": Done}}

    done = engine.run(new(Structured))
    assert done.status is Status.COMPLETED
    assert [(e.step_ref, e.iteration) for e in done.execution_history] == [
        (Review, 0),
        (Review, 1),
        (Review, 2),
        (Done, None),
    ]


# -- WCP-11 implicit termination ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "leaf", "other"),
    [("approve", pf.Filed, pf.Discarded), ("reject", pf.Discarded, pf.Filed)],
)
def test_wcp11_implicit_termination_of_paths_with_their_own_ends(
    decision: str, leaf: type, other: type
) -> None:
    done = engine.run(new(pf.SeparateEndsFlow, {"assess": decision}))
    assert done.status is Status.COMPLETED
    assert history(done)[-1] == leaf.__name__
    assert other in done.skipped_steps


def test_wcp11_implicit_termination_when_no_work_is_left() -> None:
    instance = started(pf.ParallelEndsFlow, {"screen": "clear"})
    instance = fire(instance, pf.Screen)
    instance = fire(instance, pf.Screened)
    # One branch has ended in its leaf; the other still has work.
    assert engine.check_completion(instance).status is Status.RUNNING
    instance = fire(instance, pf.Prepare)
    instance = fire(instance, pf.Prepared)
    assert instance.active_steps == frozenset()
    done = engine.check_completion(instance)
    assert done.status is Status.COMPLETED
    assert done.current_step is None
    assert engine.run(new(pf.ParallelEndsFlow, {"screen": "clear"})).status is Status.COMPLETED


# -- WCP-12 MI without synchronization (workaround) ------------------------------------------

PARTIES = ["bank", "courier", "customer"]


def test_wcp12_multiple_instances_without_synchronization() -> None:
    instance = started(pf.NoSyncFlow, {"parties": PARTIES})
    assert instance.active_steps == {pf.Fulfil, pf.NotifyParty}
    instance = fire(instance, pf.Fulfil)
    instance = fire(instance, pf.Invoice)
    # The main thread went on without waiting for any notification.
    assert ran() == ["Accept", "Fulfil", "Invoice"]
    assert instance.active_steps == {pf.NotifyParty}
    done = engine.run(instance)
    assert done.status is Status.COMPLETED
    assert ran()[3:] == ["NotifyParty[0]", "NotifyParty[1]", "NotifyParty[2]", "CloseOrder"]
    assert done.context.steps["notify_party"] == [{"party": party} for party in PARTIES]


def test_wcp12_for_each_itself_always_synchronizes() -> None:
    # Why it is a workaround: the step after a ForEach waits for every run.
    done = engine.run(new(pf.KeyedRunTimeFlow, {"reviewers": ["a", "b"]}))
    assert ran() == ["Assign", "ReviewPaper[0]", "ReviewPaper[1]", "Decide"]
    assert done.context.steps["decide"] == {"reviews": 2}


# -- WCP-13 MI with design-time knowledge ------------------------------------------------------


def test_wcp13_multiple_instances_with_design_time_knowledge() -> None:
    done = engine.run(new(pf.DesignTimeFlow))
    assert done.status is Status.COMPLETED
    assert ran() == ["DraftPolicy", "SignOff[0]", "SignOff[1]", "SignOff[2]", "Publish"]
    assert done.context.steps["sign_off"] == [
        {"by": "legal"},
        {"by": "finance"},
        {"by": "security"},
    ]
    runs = [e for e in done.execution_history if e.step_ref is pf.SignOff]
    assert [e.iteration for e in runs] == [0, 1, 2], "one history entry per instance"


# -- WCP-14 MI with a-priori run-time knowledge ------------------------------------------------


@pytest.mark.parametrize(("pages", "reviews"), [(0, 0), (12, 1), (35, 3)])
def test_wcp14_multiple_instances_with_run_time_knowledge(pages: int, reviews: int) -> None:
    done = engine.run(new(pf.RunTimeFlow, {"pages": pages}))
    assert done.status is Status.COMPLETED
    assert ran() == ["SubmitPaper", *[f"ReviewPaper[{n}]" for n in range(reviews)], "Decide"]
    assert done.context.steps["review_paper"] == [{"by": f"r{n}"} for n in range(reviews)]
    assert done.context.steps["decide"] == {"reviews": reviews}


def test_wcp14_multiple_instances_from_the_start_data() -> None:
    done = engine.run(new(pf.KeyedRunTimeFlow, {"reviewers": ["ann", "bob", "cy", "di"]}))
    assert done.context.steps["review_paper"] == [
        {"by": "ann"},
        {"by": "bob"},
        {"by": "cy"},
        {"by": "di"},
    ]
    assert done.context.steps["decide"] == {"reviews": 4}


# -- WCP-15 MI without a-priori run-time knowledge (workaround) --------------------------------


def test_wcp15_multiple_instances_without_run_time_knowledge() -> None:
    contains = {"car": ["engine", "body"], "engine": ["piston", "valve"]}
    done = engine.run(new(pf.UnknownCountFlow, {"root": "car", "contains": contains}))
    assert done.status is Status.COMPLETED
    # Only "car" was known when the node started; the others turned up while it ran.
    parts = ["car", "engine", "body", "piston", "valve"]
    assert ran() == ["Unpack", *[f"InspectPart:{part}" for part in parts], "Certify"]
    runs = [e for e in done.execution_history if e.step_ref is pf.InspectPart]
    assert [e.iteration for e in runs] == [0, 1, 2, 3, 4]
    assert [e.event for e in runs] == ["more", "more", "more", "more", "finished"]
    assert done.context.steps["inspect_part"] == {"queue": [], "seen": parts}


# -- WCP-16 deferred choice ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resumed", "event", "withdrawn", "late_event", "branch", "other"),
    [
        (pf.AwaitAcceptance, "received", pf.OfferExpiry, "timeout", pf.BookTrip, pf.ArchiveOffer),
        (pf.OfferExpiry, "timeout", pf.AwaitAcceptance, "received", pf.ArchiveOffer, pf.BookTrip),
    ],
    ids=["accepted", "expired"],
)
def test_wcp16_deferred_choice(
    resumed: type, event: str, withdrawn: type, late_event: str, branch: type, other: type
) -> None:
    waiting = engine.run(new(pf.DeferredChoiceFlow))
    assert waiting.status is Status.WAITING
    assert waiting.waiting_steps == {pf.AwaitAcceptance, pf.OfferExpiry}
    chosen = engine.resume_step(waiting, resumed, event)
    # The environment chose: the other alternative is gone at once.
    assert chosen.waiting_steps == frozenset()
    assert chosen.skipped_steps == {withdrawn}
    assert chosen.active_steps == {pf.Settle}
    assert engine.resume_step(chosen, withdrawn, late_event) == chosen, "too late"
    done = engine.run(chosen)
    assert done.status is Status.COMPLETED
    assert ran() == ["MakeOffer", "Settle", branch.__name__]
    assert other in done.skipped_steps


# -- WCP-17 interleaved parallel routing (workaround) -------------------------------------------


def test_wcp17_interleaved_parallel_routing() -> None:
    checks = {"brakes": 2, "lights": 1, "tyres": 3}
    done = asyncio.run(engine.arun(new(pf.InterleavedFlow, {"checks": checks})))
    assert done.status is Status.COMPLETED
    # Every task ran, in the order chosen at run time, and none overlapped another.
    assert ran() == [
        "Arrive",
        "lights:start",
        "lights:end",
        "brakes:start",
        "brakes:end",
        "tyres:start",
        "tyres:end",
        "Release",
    ]
    assert done.context.steps["inspect"] == [
        {"check": "lights"},
        {"check": "brakes"},
        {"check": "tyres"},
    ]


def test_wcp17_fan_out_branches_may_overlap() -> None:
    # Why it is a workaround: tasks written as parallel steps are not
    # interleaved under arun (nor under the runtime).
    done = asyncio.run(engine.arun(new(pf.ParallelInspectionFlow)))
    assert done.status is Status.COMPLETED
    assert set(ran()[1:4]) == {"Brakes:start", "Lights:start", "Tyres:start"}


# -- WCP-18 milestone (workaround) ------------------------------------------------------------


def test_wcp18_milestone_reached_and_not_expired() -> None:
    waiting = engine.run(new(pf.MilestoneFlow))
    assert waiting.waiting_steps == {pf.AwaitChangeRequest, pf.AwaitTicketing}, "milestone holds"
    changed = engine.run(engine.resume_step(waiting, pf.AwaitChangeRequest, "received"))
    assert pf.ChangeRoute in changed.completed_steps
    assert pf.RefuseChange in changed.skipped_steps
    assert changed.waiting_steps == {pf.AwaitTicketing}, "the close waits for the ticket"
    done = engine.run(engine.resume_step(changed, pf.AwaitTicketing, "received"))
    assert done.status is Status.COMPLETED
    assert ran() == ["OpenBooking", "Book", "ChangeRoute", "IssueTicket", "CloseBooking"]


def test_wcp18_milestone_expired() -> None:
    waiting = engine.run(new(pf.MilestoneFlow))
    ticketed = engine.run(engine.resume_step(waiting, pf.AwaitTicketing, "received"))
    assert ticketed.waiting_steps == {pf.AwaitChangeRequest}
    done = engine.run(engine.resume_step(ticketed, pf.AwaitChangeRequest, "received"))
    assert done.status is Status.COMPLETED
    assert pf.RefuseChange in done.completed_steps
    assert pf.ChangeRoute in done.skipped_steps
    assert ran() == ["OpenBooking", "Book", "IssueTicket", "RefuseChange", "CloseBooking"]


# -- WCP-19 cancel task --------------------------------------------------------------------------


def test_wcp19_cancel_task() -> None:
    waiting = engine.run(new(pf.CancelTaskFlow))
    assert waiting.waiting_steps == {pf.AssessClaim, pf.AwaitWithdrawal}
    cancelled = engine.resume_step(waiting, pf.AwaitWithdrawal, "received")
    assert pf.AssessClaim in cancelled.skipped_steps, "the task is withdrawn"
    assert cancelled.waiting_steps == frozenset()
    assert engine.resume_step(cancelled, pf.AssessClaim, "received") == cancelled
    done = engine.run(cancelled)
    assert done.status is Status.COMPLETED
    assert done.context.steps["close_claim"] == {"assessed": False}
    assert pf.AssessClaim not in done.completed_steps


def test_wcp19_a_task_that_finishes_first_withdraws_its_cancel_trigger() -> None:
    waiting = engine.run(new(pf.CancelTaskFlow))
    assessed = engine.resume_step(waiting, pf.AssessClaim, "received")
    assert assessed.skipped_steps == {pf.AwaitWithdrawal}
    done = engine.run(assessed)
    assert done.context.steps["close_claim"] == {"assessed": True}


def test_wcp19_cancel_a_running_task_under_arun() -> None:
    done = asyncio.run(engine.arun(new(pf.RunningCancelFlow)))
    assert done.status is Status.COMPLETED
    assert "LongAssessment:start" in ran()
    assert "LongAssessment:end" not in ran(), "the running task was cancelled"
    assert "FileReport" not in ran(), "and what came after it never ran"
    assert done.skipped_steps == {pf.LongAssessment, pf.FileReport}
    assert history(done) == ["SubmitClaim", "Recall", "CloseRecalled", "Done"]


# -- WCP-20 cancel case ---------------------------------------------------------------------------


def test_wcp20_cancel_case() -> None:
    waiting = engine.run(new(pf.CancelTaskFlow))
    assert waiting.status is Status.WAITING
    cancelled = engine.fail(waiting, None, "customer left")
    assert cancelled.status is Status.FAILED
    assert cancelled.error == {"kind": "error", "step": None, "reason": "customer left"}
    assert cancelled.active_steps == frozenset()
    assert cancelled.waiting_steps == frozenset()
    # Nothing of it runs any more.
    assert engine.resume_step(cancelled, pf.AssessClaim, "received") == cancelled
    assert engine.run(cancelled) == cancelled
    assert history(cancelled) == ["SubmitClaim"]


def test_wcp20_cancel_case_in_the_runtime() -> None:
    with Hephaestus(MemoryStorage()) as app:
        iid = app.start_instance(pf.CancelTaskFlow, id="canceltask::a")
        assert app.wait(iid, timeout=10).status is Status.WAITING
        cancelled = app.cancel(iid, reason="customer left")
        assert cancelled.status is Status.FAILED
        assert cancelled.error == {"kind": "cancelled", "reason": "customer left"}
        assert cancelled.active_steps == frozenset()
        assert cancelled.waiting_steps == frozenset()
        with pytest.raises(InvalidTransitionError):
            app.resume(iid, "received", step=pf.AssessClaim)


# -- WCP-21 structured loop ------------------------------------------------------------------------


def test_wcp21_structured_loop() -> None:
    done = engine.run(new(pf.LoopFlow, {"answers": ["pending", "pending", "settled"]}))
    assert done.status is Status.COMPLETED
    assert ran() == [
        "Charge",
        "PollSettlement[0]",
        "PollSettlement[1]",
        "PollSettlement[2]",
        "Dispatch",
    ]
    runs = [
        (e.iteration, e.event) for e in done.execution_history if e.step_ref is pf.PollSettlement
    ]
    assert runs == [(0, "pending"), (1, "pending"), (2, "settled")]
    assert done.context.steps["poll_settlement"] == {"run": 2}, "the last run's result"


def test_wcp21_structured_loop_is_bounded() -> None:
    failed = engine.run(new(pf.LoopFlow, {"answers": []}))
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert failed.error["kind"] == "max_iterations"
    assert ran().count("Dispatch") == 0
    assert len([r for r in ran() if r.startswith("PollSettlement")]) == 4


# -- WCP-43 explicit termination -----------------------------------------------------------------


def test_wcp43_explicit_termination() -> None:
    done = engine.run(new(pf.TerminateFlow, {"screen_applicant": "fraud"}))
    assert done.status is Status.COMPLETED
    assert history(done) == ["Apply", "ScreenApplicant", "Terminate"]
    # The waiting branch is withdrawn, not left waiting.
    assert done.waiting_steps == frozenset()
    assert done.active_steps == frozenset()
    assert pf.AwaitDocuments in done.skipped_steps
    assert done.current_step is None


def test_wcp43_without_termination_the_case_goes_on() -> None:
    waiting = engine.run(new(pf.TerminateFlow, {"screen_applicant": "clear"}))
    assert waiting.status is Status.WAITING
    assert waiting.waiting_steps == {pf.AwaitDocuments}
    done = engine.run(engine.resume_step(waiting, pf.AwaitDocuments, "received"))
    assert done.status is Status.COMPLETED
    assert history(done)[-2:] == ["Onboard", "Done"]
    assert Terminate in done.skipped_steps
