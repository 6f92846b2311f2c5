"""Filters and truncation of trajectories (METHODS.md step 7); tokens counted as len(text) // 4."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sera.agent.parse import format_observation
from sera.agent.searchreplace import Edit
from sera.specialize.filters import (mean_tool_output_tokens, most_edit_blocks,
                                     select_by_truncation, too_long_tool_outputs,
                                     too_many_changed_lines, too_many_edit_blocks,
                                     truncate_to_context)


def count(text: str) -> int:
    return len(text) // 4


def trajectory(*turns: tuple[str, str], task: str = "t" * 40) -> list[dict[str, str]]:
    """system + task, then one (assistant, tool output) pair per turn."""
    messages = [{"role": "system", "content": "s" * 40}, {"role": "user", "content": task}]
    for reply, output in turns:
        messages.append({"role": "assistant", "content": reply})
        messages.append({"role": "user", "content": format_observation(output)})
    return messages


def patch_with(changed: int) -> str:
    body = "".join(f"+line {n}\n" for n in range(changed))
    return f"--- a/f.py\n+++ b/f.py\n@@ -0,0 +1,{changed} @@\n{body}"


def test_patches_over_forty_changed_lines_are_too_big():
    assert not too_many_changed_lines(patch_with(40))
    assert too_many_changed_lines(patch_with(41))
    assert too_many_changed_lines(patch_with(11), limit=10)


def reply_with_blocks(count: int) -> str:
    blocks = [Edit("f.py", (f"old {n}",), (f"new {n}",)).render("python") for n in range(count)]
    return "Fix f.\n" + "\n\n".join(blocks)


def test_replies_over_three_edit_blocks_are_too_long():
    example = {"role": "assistant", "content": reply_with_blocks(5), "example": True}
    messages = trajectory((reply_with_blocks(2), "ok"), (reply_with_blocks(3), "ok"))
    messages.insert(2, example)  # the worked example's blocks are not the row's answer
    assert most_edit_blocks(messages) == 3
    assert not too_many_edit_blocks(messages)
    messages.append({"role": "assistant", "content": reply_with_blocks(4)})
    assert most_edit_blocks(messages) == 4
    assert too_many_edit_blocks(messages)
    assert not too_many_edit_blocks(messages, limit=4)
    assert not too_many_edit_blocks(messages, limit=0)  # 0 = no limit
    assert most_edit_blocks(trajectory(("no blocks here", "ok"))) == 0


def test_mean_tool_output_counts_only_the_tool_results_without_their_wrapper():
    messages = trajectory(("a", "x" * 400), ("b", "y" * 800), task="task " * 1000)
    assert mean_tool_output_tokens(messages, count) == 150.0
    assert not too_long_tool_outputs(messages, count)
    assert too_long_tool_outputs(messages, count, limit=149)
    assert mean_tool_output_tokens(trajectory(), count) == 0.0


def test_a_trajectory_that_fits_is_kept_whole():
    messages = trajectory(("a" * 40, "o" * 40), ("b" * 40, "o" * 40))
    total = sum(count(m["content"]) + 8 for m in messages)
    assert truncate_to_context(messages, total, count) == (messages, 1.0)


def test_the_chat_template_overhead_counts_per_message():
    messages = trajectory(("a" * 40, "o" * 40))
    plain = sum(count(m["content"]) for m in messages)
    assert truncate_to_context(messages, plain, count, per_message_tokens=0)[1] == 1.0
    assert truncate_to_context(messages, plain, count)[1] < 1.0


def test_a_long_trajectory_is_cut_after_its_last_complete_assistant_turn():
    messages = trajectory(("a" * 40, "o" * 40), ("b" * 40, "o" * 4000), ("c" * 40, "o" * 40))
    # system 18 + task 18 + a 18 + obs 18+ + b 18 fit in 100 tokens; b's huge output does not.
    kept, ratio = truncate_to_context(messages, 100, count)
    assert kept == messages[:5] and kept[-1]["content"] == "b" * 40
    assert ratio == 5 / 8


def test_the_cut_never_ends_on_a_tool_output():
    messages = trajectory(("a" * 40, "o" * 40), ("b" * 400, "o" * 40))
    kept, ratio = truncate_to_context(messages, 80, count)
    assert [m["role"] for m in kept] == ["system", "user", "assistant"]
    assert ratio == 3 / 6


def test_nothing_is_kept_when_not_even_the_first_turn_fits():
    messages = trajectory(("a" * 400, "o"))
    assert truncate_to_context(messages, 30, count) == ([], 0.0)
    assert truncate_to_context(messages[:2] + [messages[3]], 1, count) == ([], 0.0)


def test_selection_keeps_the_most_complete_first_and_drops_the_rest():
    items = [("a", 0.96), ("b", 1.0), ("c", 0.5), ("d", 0.95), ("e", 1.0)]
    assert select_by_truncation(items) == [("b", 1.0), ("e", 1.0), ("a", 0.96), ("d", 0.95)]
    assert select_by_truncation(items, threshold=1.0) == [("b", 1.0), ("e", 1.0)]
    metas = [{"id": 1, "truncation_ratio": 0.2}, {"id": 2, "truncation_ratio": 0.99}]
    assert select_by_truncation(metas, ratio=lambda m: m["truncation_ratio"]) == [metas[1]]


turns = st.lists(st.tuples(st.text(max_size=300), st.text(max_size=300)), max_size=8)


@given(turns, st.integers(min_value=0, max_value=600))
def test_truncation_keeps_the_longest_fitting_prefix_ending_on_an_assistant(pairs, budget):
    messages = trajectory(*pairs)
    kept, ratio = truncate_to_context(messages, budget, count)

    def cost(prefix):
        return sum(count(m["content"]) + 8 for m in prefix)

    assert 0.0 <= ratio <= 1.0 and kept == messages[:len(kept)]
    if ratio == 1.0:
        assert kept == messages and cost(messages) <= budget
        return
    assert ratio == len(kept) / len(messages)
    if kept:
        assert kept[-1]["role"] == "assistant" and len(kept) >= 3 and cost(kept) <= budget
    longer = [n for n in range(len(kept) + 1, len(messages) + 1)
              if messages[n - 1]["role"] == "assistant" and cost(messages[:n]) <= budget]
    assert not longer
