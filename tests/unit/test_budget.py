"""The buffer budget: what it charges, when it is spent, and the read buffers it lends."""

from __future__ import annotations

from echostat.server.budget import (
    LOOP_READ_BYTES,
    READ_BYTES,
    SQUEEZED_READ_BYTES,
    BufferBudget,
)

LIMIT = 4 * READ_BYTES


def test_taking_the_shared_buffer_charges_it_and_replaces_it() -> None:
    """The taken buffer is the caller's: charged, and never handed out again."""
    budget = BufferBudget(LIMIT)
    shared = budget.view
    taken = budget.take_view()

    assert taken is shared and budget.view is not shared
    assert budget.charged == READ_BYTES and not budget.spent


def test_reads_shrink_to_a_page_once_a_full_read_no_longer_fits() -> None:
    """Near the limit reads are a page; at it the budget is spent; released, reads grow back."""
    budget = BufferBudget(LIMIT)
    held = [budget.new_buffer() for _ in range(3)]
    assert len(budget.view) == READ_BYTES

    held.append(budget.new_buffer())
    assert budget.spent and len(budget.view) == SQUEEZED_READ_BYTES
    assert len(budget.new_buffer()) == SQUEEZED_READ_BYTES

    budget.charge(-(budget.charged))
    assert not budget.spent and len(budget.view) == READ_BYTES


def test_a_resized_budget_is_spent_against_its_new_limit() -> None:
    """Lowered below what is held, it is spent and reads shrink; raised again, it is not."""
    budget = BufferBudget(LIMIT)
    held = [budget.new_buffer() for _ in range(2)]
    budget.resize(READ_BYTES)
    assert budget.spent and len(budget.view) == SQUEEZED_READ_BYTES
    assert budget.charged == sum(len(buffer) for buffer in held)

    budget.resize(LIMIT)
    assert not budget.spent and len(budget.view) == READ_BYTES


def test_lending_starts_when_a_loop_read_may_not_fit_and_ends_once_half_is_free() -> None:
    """Held reads past their share's room for one more, or the budget nearly spent: everyone
    reads into lent buffers; only once both are half free again do they read in the loop's."""
    limit = 32 * LOOP_READ_BYTES
    held_share = limit // 8
    budget = BufferBudget(limit)
    changes: list[bool] = []
    budget.on_lending = changes.append
    assert not budget.lending

    budget.charge(held_share - LOOP_READ_BYTES + 1, held_read=True)
    assert budget.lending and changes == [True]
    budget.charge(-(budget.held_reads - held_share // 2 - 1), held_read=True)
    assert budget.lending
    budget.charge(-1, held_read=True)
    assert not budget.lending and changes == [True, False]
    budget.charge(-budget.held_reads, held_read=True)

    held = [budget.new_buffer() for _ in range((limit - LOOP_READ_BYTES) // READ_BYTES + 1)]
    assert budget.lending and changes == [True, False, True]
    budget.charge(-(budget.charged - limit // 2))
    assert not budget.lending and changes == [True, False, True, False]
    assert held


def test_a_budget_too_small_for_held_reads_always_lends() -> None:
    """With less than a loop read for held reads (a 1 MiB budget), reads are always lent."""
    assert BufferBudget(1 << 20).lending
