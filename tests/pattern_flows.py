"""Workflows for ``test_workflow_patterns``: the Workflow Control-Flow Patterns
(WCP) written with the public API, one section per pattern.

They live at module level so that instances of them can be saved and loaded
(the runtime's cancel in WCP-20 needs that). :data:`RAN` records the steps
that executed, in order: a step's class name, ``Name[index]`` for a run of a
``ForEach``, and ``Name:start`` / ``Name:end`` around the ``await`` of an
``async`` step.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hephaestus import (
    Done,
    ForEach,
    Ok,
    Repeat,
    Step,
    Terminate,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
    transit,
)

#: What executed, in order (see the module docs).
RAN: list[str] = []


class Recorded(Step):
    """Records its run in :data:`RAN` and emits its only event."""

    events = ("next",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append(type(self).__name__)
        return self.events[0]


class Overlapping(Step):
    """An ``async`` step that yields to the event loop once between its start
    and its end, so that ``engine.arun`` can show what runs at the same time."""

    events = ("next",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        name = type(self).__name__
        RAN.append(f"{name}:start")
        await asyncio.sleep(0)
        RAN.append(f"{name}:end")
        return self.events[0]


class Decided(Step):
    """Emits the event that ``context.initial[<its step key>]`` names."""

    events = ("next",)
    step_key = "decided"

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append(type(self).__name__)
        return context.initial[type(self).step_key or ""]


# -- WCP-1 sequence ---------------------------------------------------------------------------


class ReceiveOrder(Recorded):
    events = ("received",)


class PickItems(Recorded):
    events = ("picked",)


class PackParcel(Recorded):
    events = ("packed",)


class SequenceFlow(Workflow, unique=Unique("sequence")):
    start = ReceiveOrder
    transitions = {
        ReceiveOrder: {"received": PickItems},
        PickItems: {"picked": PackParcel},
        PackParcel: {"packed": Done},
    }


# -- WCP-2 parallel split, WCP-3 synchronization ------------------------------------------------


class PlaceOrder(Recorded):
    events = ("placed",)


class ChargeCard(Overlapping):
    events = ("charged",)


class ReserveStock(Overlapping):
    events = ("reserved",)


class Ship(Recorded):
    events = ("shipped",)


class ParallelFlow(Workflow, unique=Unique("parallel")):
    start = PlaceOrder
    transitions = {
        PlaceOrder: {"placed": [ChargeCard, ReserveStock]},  # WCP-2: a fan-out list
        ChargeCard: {"charged": Ship},  # WCP-3: Ship has two predecessors
        ReserveStock: {"reserved": Ship},
        Ship: {"shipped": Done},
    }


# -- WCP-4 exclusive choice, WCP-5 simple merge -------------------------------------------------


class Assess(Decided):
    events = ("approve", "reject")
    step_key = "assess"


class Approve(Recorded):
    events = ("approved",)


class Reject(Recorded):
    events = ("rejected",)


class Notify(Step):
    """The merge: records which results it saw."""

    events = ("notified",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append("Notify")
        return Ok("notified", {"seen": sorted(context.steps)})


class ExclusiveFlow(Workflow, unique=Unique("exclusive")):
    """An exclusive choice by event, merged again at ``Notify``."""

    start = Assess
    transitions = {
        Assess: {"approve": Approve, "reject": Reject},
        Approve: {"approved": Notify},
        Reject: {"rejected": Notify},
        Notify: {"notified": Done},
    }


class Triage(Recorded):
    events = ("triaged",)


class FastTrack(Recorded):
    events = ("handled",)


class Standard(Recorded):
    events = ("handled",)


class RoutedFlow(Workflow, unique=Unique("routed")):
    """An exclusive choice on data: a dynamic route picks one target."""

    start = Triage
    transitions = {FastTrack: {"handled": Done}, Standard: {"handled": Done}}

    @transit(Triage, "triaged", targets=[FastTrack, Standard])
    def lane(context: Any) -> Any:
        return FastTrack if context.initial["priority"] == "high" else Standard


# -- WCP-6 multi-choice, WCP-7 structured synchronizing merge ----------------------------------


class RaiseAlert(Recorded):
    events = ("raised",)


class Email(Recorded):
    events = ("sent",)


class Sms(Recorded):
    events = ("sent",)


class Page(Recorded):
    events = ("sent",)


class Gather(Recorded):
    events = ("gathered",)


class AlertFlow(Workflow, unique=Unique("alert")):
    start = RaiseAlert
    transitions = {
        Email: {"sent": Gather},
        Sms: {"sent": Gather},
        Page: {"sent": Gather},
        Gather: {"gathered": Done},
    }

    @transit(RaiseAlert, "raised", targets=[Email, Sms, Page], many=True)
    def channels(context: Any) -> Any:
        by_name = {"email": Email, "sms": Sms, "page": Page}
        return [by_name[name] for name in context.initial["channels"]]


# -- WCP-8 multi-merge (workaround: the shared tail, once per branch) -----------------------


class Transfer(Recorded):
    events = ("split",)


class Credit(Recorded):
    events = ("credited",)


class Debit(Recorded):
    events = ("debited",)


class Audit(Step):
    """The tail both branches share; each branch gets its own copy."""

    events = ("audited",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append(f"Audit:{config['branch']}")
        return Ok("audited", {"branch": config["branch"]})


class AuditCredit(Audit):
    pass


class AuditDebit(Audit):
    pass


class CloseTransfer(Recorded):
    events = ("closed",)


class MultiMergeFlow(Workflow, unique=Unique("multimerge")):
    start = Transfer
    transitions = {
        Transfer: {"split": [Credit, Debit]},
        Credit: {"credited": (AuditCredit, {"branch": "credit"})},
        Debit: {"debited": (AuditDebit, {"branch": "debit"})},
        AuditCredit: {"audited": CloseTransfer},
        AuditDebit: {"audited": CloseTransfer},
        CloseTransfer: {"closed": Done},
    }


# -- WCP-9 structured discriminator (workaround), WCP-29 cancelling discriminator ---------------


class Alarm(Recorded):
    events = ("raised",)


class CheckBreathing(Recorded):
    events = ("checked",)


class CheckPulse(Step):
    """The slow check: under ``engine.arun`` it yields until triage has
    started (a bounded number of times), then finishes."""

    events = ("checked",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append("CheckPulse:start")
        for _ in range(1000):
            if "Triage" in RAN:
                break
            await asyncio.sleep(0)
        RAN.append("CheckPulse:end")
        return "checked"


class BreathingSeen(Recorded):
    events = ("signalled",)


class PulseSeen(Recorded):
    events = ("signalled",)


class Triage9(Step):
    """The discriminator: the first signal starts it."""

    events = ("triaged",)
    join = "first"
    step_key = "triage"

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append("Triage")
        return Ok("triaged", {"seen": sorted(context.steps)})


class Handover(Recorded):
    events = ("handed_over",)


class DiscriminatorFlow(Workflow, unique=Unique("discriminator")):
    """Each check signals the discriminator on a side branch and also goes on
    to ``Handover``, so a first-wins join withdraws only the late signal, never
    the check itself."""

    start = Alarm
    transitions = {
        Alarm: {"raised": [CheckBreathing, CheckPulse]},
        CheckBreathing: {"checked": [BreathingSeen, Handover]},
        CheckPulse: {"checked": [PulseSeen, Handover]},
        BreathingSeen: {"signalled": Triage9},
        PulseSeen: {"signalled": Triage9},
        Triage9: {"triaged": Handover},
        Handover: {"handed_over": Done},
    }


class FirstTriage(Recorded):
    events = ("triaged",)
    join = "first"


class CancellingDiscriminatorFlow(Workflow, unique=Unique("cancelling")):
    """A bare first-wins join: the branch that loses is withdrawn (WCP-29)."""

    start = Alarm
    transitions = {
        Alarm: {"raised": [CheckBreathing, CheckPulse]},
        CheckBreathing: {"checked": FirstTriage},
        CheckPulse: {"checked": FirstTriage},
        FirstTriage: {"triaged": Done},
    }


# -- WCP-11 implicit termination ----------------------------------------------------------------


class Filed(Done):
    pass


class Discarded(Done):
    pass


class SeparateEndsFlow(Workflow, unique=Unique("ends")):
    """Exclusive paths end in leaves of their own; nothing joins them."""

    start = Assess
    transitions = {
        Assess: {"approve": Approve, "reject": Reject},
        Approve: {"approved": Filed},
        Reject: {"rejected": Discarded},
    }


class Open(Recorded):
    events = ("opened",)


class Screen(Decided):
    events = ("clear", "refused")
    step_key = "screen"


class Prepare(Recorded):
    events = ("prepared",)


class Screened(Done):
    pass


class Prepared(Done):
    pass


class ParallelEndsFlow(Workflow, unique=Unique("pends")):
    """Two concurrent branches end in leaves of their own (allowed because the
    screening branch may terminate)."""

    start = Open
    transitions = {
        Open: {"opened": [Screen, Prepare]},
        Screen: {"clear": Screened, "refused": Terminate},
        Prepare: {"prepared": Prepared},
    }


# -- WCP-12 MI without synchronization (workaround) ---------------------------------------


class Accept(Recorded):
    events = ("accepted",)


class Fulfil(Recorded):
    events = ("fulfilled",)


class Invoice(Recorded):
    events = ("invoiced",)


class NotifyParty(Step):
    events = ("notified",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append(f"NotifyParty[{config['index']}]")
        return Ok("notified", {"party": config["item"]})


class CloseOrder(Recorded):
    events = ("closed",)


class NoSyncFlow(Workflow, unique=Unique("nosync")):
    """The instances run on a branch of their own that meets the main thread
    only at the end, so nothing in between waits for them."""

    start = Accept
    transitions = {
        Accept: {"accepted": [Fulfil, ForEach(NotifyParty, items="parties")]},
        Fulfil: {"fulfilled": Invoice},
        Invoice: {"invoiced": CloseOrder},
        NotifyParty: {"notified": CloseOrder},
        CloseOrder: {"closed": Done},
    }


# -- WCP-13 MI with design-time knowledge ---------------------------------------------------


class DraftPolicy(Recorded):
    events = ("drafted",)


class SignOff(Step):
    events = ("signed",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append(f"SignOff[{config['index']}]")
        return Ok("signed", {"by": config["item"]})


class Publish(Recorded):
    events = ("published",)


def signers(context: Any) -> list[str]:
    """Known when the workflow is written: always these three."""
    return ["legal", "finance", "security"]


class DesignTimeFlow(Workflow, unique=Unique("designtime")):
    start = DraftPolicy
    transitions = {
        DraftPolicy: {"drafted": ForEach(SignOff, items=signers)},
        SignOff: {"signed": Publish},
        Publish: {"published": Done},
    }


# -- WCP-14 MI with a-priori run-time knowledge -------------------------------------------------


class SubmitPaper(Step):
    """Decides, at run time, how many reviews the paper needs."""

    events = ("submitted",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append("SubmitPaper")
        pages = context.initial["pages"]
        return Ok("submitted", {"reviewers": [f"r{n}" for n in range(pages // 10)]})


class ReviewPaper(Step):
    events = ("reviewed",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append(f"ReviewPaper[{config['index']}]")
        return Ok("reviewed", {"by": config["item"]})


class Decide(Step):
    events = ("decided",)

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append("Decide")
        return Ok("decided", {"reviews": len(context.steps["review_paper"])})


def reviewers(context: Any) -> Any:
    """Known once the paper is submitted, before any review starts."""
    return context.steps["submit_paper"]["reviewers"]


class RunTimeFlow(Workflow, unique=Unique("runtime")):
    start = SubmitPaper
    transitions = {
        SubmitPaper: {"submitted": ForEach(ReviewPaper, items=reviewers)},
        ReviewPaper: {"reviewed": Decide},
        Decide: {"decided": Done},
    }


class Assign(Recorded):
    events = ("assigned",)


class KeyedRunTimeFlow(Workflow, unique=Unique("keyed")):
    """The same with the items in the start data: ``items="reviewers"``."""

    start = Assign
    transitions = {
        Assign: {"assigned": ForEach(ReviewPaper, items="reviewers")},
        ReviewPaper: {"reviewed": Decide},
        Decide: {"decided": Done},
    }


# -- WCP-15 MI without a-priori run-time knowledge (workaround) ----------------------------


class Unpack(Recorded):
    events = ("unpacked",)


class InspectPart(Step):
    """Inspects the next part of a work list that grows while it runs: a part
    may turn out to contain further parts."""

    events = ("more", "finished")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        before = context.steps.get("inspect_part", {"queue": [context.initial["root"]], "seen": []})
        queue = list(before["queue"])
        part = queue.pop(0)
        RAN.append(f"InspectPart:{part}")
        queue.extend(context.initial["contains"].get(part, []))
        seen = [*before["seen"], part]
        return Ok("more" if queue else "finished", {"queue": queue, "seen": seen})


class Certify(Recorded):
    events = ("certified",)


class UnknownCountFlow(Workflow, unique=Unique("unknown")):
    start = Unpack
    transitions = {
        Unpack: {"unpacked": Repeat(InspectPart, again="more", max_iterations=100)},
        InspectPart: {"finished": Certify},
        Certify: {"certified": Done},
    }


# -- WCP-16 deferred choice ---------------------------------------------------------------------


class MakeOffer(Recorded):
    events = ("offered",)


class AwaitAcceptance(WaitForEvent):
    pass


class OfferExpiry(Wait):
    pass


class Settle(Step):
    """The first of the two waits to be resumed wins; the other is withdrawn."""

    events = ("accepted", "expired")
    join = "first"

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append("Settle")
        return "accepted" if "await_acceptance" in context.steps else "expired"


class BookTrip(Recorded):
    events = ("booked",)


class ArchiveOffer(Recorded):
    events = ("archived",)


class DeferredChoiceFlow(Workflow, unique=Unique("deferred")):
    start = MakeOffer
    transitions = {
        MakeOffer: {"offered": [AwaitAcceptance, (OfferExpiry, {"duration": 2, "unit": "day"})]},
        AwaitAcceptance: {"received": Settle},
        OfferExpiry: {"timeout": Settle},
        Settle: {"accepted": BookTrip, "expired": ArchiveOffer},
        BookTrip: {"booked": Done},
        ArchiveOffer: {"archived": Done},
    }


# -- WCP-17 interleaved parallel routing (workaround) ------------------------------------------


class Arrive(Recorded):
    events = ("arrived",)


class Inspect(Step):
    """One of the inspections; which one is the item."""

    events = ("inspected",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append(f"{config['item']}:start")
        await asyncio.sleep(0)
        RAN.append(f"{config['item']}:end")
        return Ok("inspected", {"check": config["item"]})


class Release(Recorded):
    events = ("released",)


def inspection_order(context: Any) -> Any:
    """The order is decided at run time, from the data."""
    return sorted(context.initial["checks"], key=context.initial["checks"].get)


class InterleavedFlow(Workflow, unique=Unique("interleaved")):
    start = Arrive
    transitions = {
        Arrive: {"arrived": ForEach(Inspect, items=inspection_order, concurrency=1)},
        Inspect: {"inspected": Release},
        Release: {"released": Done},
    }


class Unordered(Recorded):
    events = ("arrived",)


class Brakes(Overlapping):
    events = ("inspected",)


class Lights(Overlapping):
    events = ("inspected",)


class Tyres(Overlapping):
    events = ("inspected",)


class ParallelInspectionFlow(Workflow, unique=Unique("pinspect")):
    """The same inspections as three steps of a fan-out: they may overlap."""

    start = Unordered
    transitions = {
        Unordered: {"arrived": [Brakes, Lights, Tyres]},
        Brakes: {"inspected": Release},
        Lights: {"inspected": Release},
        Tyres: {"inspected": Release},
        Release: {"released": Done},
    }


# -- WCP-18 milestone (workaround) ------------------------------------------------------------


class OpenBooking(Recorded):
    events = ("opened",)


class Book(Recorded):
    events = ("booked",)


class AwaitTicketing(WaitForEvent):
    """While this waits, the booking is booked but not ticketed: the milestone."""


class IssueTicket(Recorded):
    events = ("issued",)


class AwaitChangeRequest(WaitForEvent):
    pass


class ChangeRoute(Recorded):
    events = ("changed",)


class RefuseChange(Recorded):
    events = ("refused",)


class CloseBooking(Recorded):
    events = ("closed",)


class MilestoneFlow(Workflow, unique=Unique("milestone")):
    start = OpenBooking
    transitions = {
        OpenBooking: {"opened": [Book, AwaitChangeRequest]},
        Book: {"booked": AwaitTicketing},
        AwaitTicketing: {"received": IssueTicket},
        IssueTicket: {"issued": CloseBooking},
        ChangeRoute: {"changed": CloseBooking},
        RefuseChange: {"refused": CloseBooking},
        CloseBooking: {"closed": Done},
    }

    @transit(AwaitChangeRequest, "received", targets=[ChangeRoute, RefuseChange])
    def milestone(context: Any) -> Any:
        # The milestone holds when the other branch has booked and not yet ticketed.
        reached = "book" in context.steps
        expired = "await_ticketing" in context.steps
        return ChangeRoute if reached and not expired else RefuseChange


# -- WCP-19 cancel task -------------------------------------------------------------------------


class SubmitClaim(Recorded):
    events = ("submitted",)


class AssessClaim(WaitForEvent):
    """A long-running task done outside (a loss adjuster's assessment)."""


class AwaitWithdrawal(WaitForEvent):
    """The cancel trigger of the assessment."""


class CloseClaim(Step):
    events = ("closed",)
    join = "first"

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append("CloseClaim")
        return Ok("closed", {"assessed": "assess_claim" in context.steps})


class CancelTaskFlow(Workflow, unique=Unique("canceltask")):
    start = SubmitClaim
    transitions = {
        SubmitClaim: {"submitted": [AssessClaim, AwaitWithdrawal]},
        AssessClaim: {"received": CloseClaim},
        AwaitWithdrawal: {"received": CloseClaim},
        CloseClaim: {"closed": Done},
    }


class LongAssessment(Step):
    """Runs for a while under ``engine.arun`` (bounded yields) unless cancelled."""

    events = ("assessed",)

    async def execute(self, instance: Any, config: Any, context: Any) -> Any:
        RAN.append("LongAssessment:start")
        for _ in range(1000):
            await asyncio.sleep(0)
        RAN.append("LongAssessment:end")
        return "assessed"


class FileReport(Recorded):
    events = ("filed",)


class Recall(Recorded):
    """The claimant recalls the claim at once."""

    events = ("recalled",)


class CloseRecalled(Recorded):
    events = ("closed",)
    join = "first"


class RunningCancelFlow(Workflow, unique=Unique("runcancel")):
    start = SubmitClaim
    transitions = {
        SubmitClaim: {"submitted": [LongAssessment, Recall]},
        LongAssessment: {"assessed": FileReport},
        FileReport: {"filed": CloseRecalled},
        Recall: {"recalled": CloseRecalled},
        CloseRecalled: {"closed": Done},
    }


# -- WCP-21 structured loop ---------------------------------------------------------------------


class Charge(Recorded):
    events = ("charged",)


class PollSettlement(Step):
    events = ("pending", "settled")

    def execute(self, instance: Any, config: Any, context: Any) -> Any:
        run = context.steps.get("poll_settlement", {"run": -1})["run"] + 1
        RAN.append(f"PollSettlement[{run}]")
        answers = context.initial["answers"]
        return Ok(answers[run] if run < len(answers) else "pending", {"run": run})


class Dispatch(Recorded):
    events = ("dispatched",)


class LoopFlow(Workflow, unique=Unique("loop")):
    start = Charge
    transitions = {
        Charge: {"charged": Repeat(PollSettlement, again="pending", max_iterations=4)},
        PollSettlement: {"settled": Dispatch},
        Dispatch: {"dispatched": Done},
    }


# -- WCP-43 explicit termination ----------------------------------------------------------------


class Apply(Recorded):
    events = ("applied",)


class AwaitDocuments(WaitForEvent):
    pass


class ScreenApplicant(Decided):
    events = ("clear", "fraud")
    step_key = "screen_applicant"


class Onboard(Recorded):
    events = ("onboarded",)


class TerminateFlow(Workflow, unique=Unique("terminate")):
    start = Apply
    transitions = {
        Apply: {"applied": [AwaitDocuments, ScreenApplicant]},
        AwaitDocuments: {"received": Onboard},
        ScreenApplicant: {"clear": Onboard, "fraud": Terminate},
        Onboard: {"onboarded": Done},
    }
