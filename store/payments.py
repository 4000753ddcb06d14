"""Proposer-side booking helpers: the payment-provider interface, the built-in simulated provider, new PNRs.

These run on the node that received the client's request, BEFORE a command is proposed (like store.auth), so
they may use randomness and talk to the outside world; the state machine never calls them.  What they
produce (a PNR candidate, a charge's outcome and reference) goes into the command.

Paying a booking (the gateway's `Pay`):

1. `quote = db.read(booking_queries.payment_quote, pnr, user_id, now_ms)`; None -> NOT_FOUND; not
   `quote.payable` -> FAILED_PRECONDITION with `quote.reason` (no card is charged for an expired or paid hold).
2. `outcome = provider.charge(idempotency_key=f"{client_id}:{request_id}", amount_paise=quote.amount_paise,
   card_number=..., description=f"PNR {pnr}")` -- the key makes a retried request charge once.
3. propose `ConfirmPayment(pnr, amount_paise=quote.amount_paise, provider_ref=outcome.provider_ref,
   approved=outcome.approved, decline_reason=outcome.decline_reason)` with the same request id.
4. If the result is a failure whose data has `void_charge: true` (the hold expired meanwhile, someone paid
   first, the amount changed), refund that charge: `provider.refund(idempotency_key=f"void:{provider_ref}",
   provider_ref=..., amount_paise=...)`.

Refunds owed by cancellations are paid out by the leader: `booking_queries.pending_refunds` ->
`provider.refund(idempotency_key=f"refund:{refund_id}", ...)` -> propose `SettleRefunds`.

The simulated provider approves any 16-digit card number except the documented test cards:

    4000000000000002   declined: "card declined"
    4000000000009995   declined: "insufficient funds"

Its references are derived from the idempotency key (SHA-256), so the same request gets the same reference on
every node -- a retry that lands on another node after a failover still maps to the one charge the state
machine recorded.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Protocol

from .rules import PNR_ALPHABET, PNR_LENGTH

DECLINED_CARD = "4000000000000002"
INSUFFICIENT_FUNDS_CARD = "4000000000009995"
TEST_CARD = "4111111111111111"  # approved; what the demo and the tests use


def new_pnr() -> str:
    """A random PNR candidate (10 characters of the unambiguous alphabet, 50 bits) for HoldSeats."""
    # One read of the OS's random source for the whole PNR (secrets.choice per character was 10 reads), each
    # byte reduced by rejection so every character stays uniform over the alphabet.
    n = len(PNR_ALPHABET)
    limit = 256 - 256 % n
    out: list[str] = []
    while len(out) < PNR_LENGTH:
        out.extend(PNR_ALPHABET[b % n] for b in secrets.token_bytes(2 * PNR_LENGTH) if b < limit)
    return "".join(out[:PNR_LENGTH])


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    """The provider's answer to a charge.  `provider_ref` identifies the charge (also for declines)."""

    approved: bool
    provider_ref: str
    decline_reason: str = ""


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """The provider's answer to a refund."""

    ok: bool
    provider_ref: str
    message: str = ""


class PaymentProvider(Protocol):
    """What railraft needs from a payment provider.  Both calls must be idempotent by `idempotency_key`."""

    def charge(self, *, idempotency_key: str, amount_paise: int, card_number: str, description: str
               ) -> ChargeOutcome:
        """Charge `amount_paise` to the card (once per idempotency key)."""
        ...

    def refund(self, *, idempotency_key: str, provider_ref: str, amount_paise: int) -> RefundOutcome:
        """Pay `amount_paise` of charge `provider_ref` back (once per idempotency key)."""
        ...


class SimulatedProvider:
    """An in-process provider for demos and tests (see the module docstring for its test cards).

    Keeps a ledger so tests can check that a retried request charged once: `charges` maps idempotency key to
    outcome, `refunds` likewise; `charged_paise` is the money taken minus the money given back.
    """

    def __init__(self) -> None:
        self.charges: dict[str, tuple[ChargeOutcome, int]] = {}
        self.refunds: dict[str, tuple[RefundOutcome, int]] = {}

    @staticmethod
    def _ref(kind: str, key: str) -> str:
        return f"sim_{kind}_{hashlib.sha256(key.encode()).hexdigest()[:24]}"

    def charge(self, *, idempotency_key: str, amount_paise: int, card_number: str, description: str = ""
               ) -> ChargeOutcome:
        """Approve or decline deterministically by card number; the same key always gives the same outcome."""
        known = self.charges.get(idempotency_key)
        if known is not None:
            return known[0]
        card = card_number.replace(" ", "").replace("-", "")
        ref = self._ref("ch", idempotency_key)
        if amount_paise <= 0:
            outcome = ChargeOutcome(False, ref, "amount must be positive")
        elif len(card) != 16 or not card.isdigit():
            outcome = ChargeOutcome(False, ref, "invalid card number (16 digits expected)")
        elif card == DECLINED_CARD:
            outcome = ChargeOutcome(False, ref, "card declined")
        elif card == INSUFFICIENT_FUNDS_CARD:
            outcome = ChargeOutcome(False, ref, "insufficient funds")
        else:
            outcome = ChargeOutcome(True, ref)
        self.charges[idempotency_key] = (outcome, amount_paise if outcome.approved else 0)
        return outcome

    def refund(self, *, idempotency_key: str, provider_ref: str, amount_paise: int) -> RefundOutcome:
        """Refund (always succeeds for a known charge); the same key refunds once."""
        known = self.refunds.get(idempotency_key)
        if known is not None:
            return known[0]
        # A reference this object never issued is accepted too: another node's simulated provider may have
        # made the charge (references are derived from keys, so they agree across nodes).
        outcome = RefundOutcome(True, self._ref("rf", idempotency_key))
        self.refunds[idempotency_key] = (outcome, amount_paise)
        return outcome

    @property
    def charged_paise(self) -> int:
        """Net money taken through this provider object."""
        return sum(a for _, a in self.charges.values()) - sum(a for _, a in self.refunds.values())
