"""The tool-call parser: the strict Hermes/Qwen format, the lenient forms small models write, and
property tests (any string parses or raises FormatError; the canonical message is a fixed point)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sera.agent.parse import format_observation, format_tool_call, parse_reply
from sera.agent.protocol import FormatError, ToolCall

STRICT = '<tool_call>\n{"name": "bash", "arguments": {"command": "ls -la"}}\n</tool_call>'
LS = ToolCall("bash", {"command": "ls -la"})


def test_strict_form_round_trips():
    call, canonical = parse_reply(STRICT)
    assert call == LS
    assert canonical == STRICT == format_tool_call(call)


def test_thought_and_think_block_are_kept_before_the_call():
    text = "<think>\nlook around\n</think>\nI will list the files.\n" + STRICT + "\n"
    call, canonical = parse_reply(text)
    assert call == LS
    assert canonical == "<think>\nlook around\n</think>\nI will list the files.\n\n" + STRICT


def test_text_after_the_call_is_dropped():
    text = STRICT + "\n<tool_response>\ninvented output\n</tool_response>"
    assert parse_reply(text)[1] == STRICT


def test_missing_closing_tag_at_the_end():
    call, canonical = parse_reply('Listing.\n<tool_call>\n{"name": "bash", "arguments": '
                                  '{"command": "ls -la"}}')
    assert call == LS
    assert canonical == "Listing.\n\n" + STRICT


def test_json_fence_inside_tags():
    text = '<tool_call>\n```json\n{"name": "bash", "arguments": {"command": "ls -la"}}\n```\n</tool_call>'
    assert parse_reply(text)[0] == LS


def test_fenced_json_object():
    text = 'Run it:\n```json\n{"name": "bash", "arguments": {"command": "ls -la"}}\n```\nthen see.'
    call, canonical = parse_reply(text)
    assert call == LS
    assert canonical == "Run it:\n\n" + STRICT


def test_bare_json_object_with_arguments_as_a_json_string():
    text = 'ok {"name": "str_replace_editor", "arguments": "{\\"command\\": \\"view\\", \\"path\\": \\"a.py\\"}"}'
    call, canonical = parse_reply(text)
    assert call == ToolCall("str_replace_editor", {"command": "view", "path": "a.py"})
    assert canonical.startswith("ok\n\n<tool_call>\n")


@pytest.mark.parametrize("text", [
    '{"type": "function", "function": {"name": "bash", "arguments": "{\\"command\\": \\"ls -la\\"}"}}',
    '{"function": {"name": "bash", "parameters": {"command": "ls -la"}}}',
    '{"name": "bash", "parameters": {"command": "ls -la"}}',
])
def test_openai_style_wrappers_and_parameters_alias(text):
    assert parse_reply(text)[0] == LS


def test_submit_without_arguments_inside_tags():
    assert parse_reply('<tool_call>{"name": "submit"}</tool_call>')[0] == ToolCall("submit", {})


@pytest.mark.parametrize("language", ["bash", "sh", "shell"])
def test_shell_fence_is_a_bash_call(language):
    text = f"Let me look.\n```{language}\nls -la\n```\n"
    call, canonical = parse_reply(text)
    assert call == LS
    assert canonical == "Let me look.\n\n" + STRICT


def test_multi_line_shell_fence_keeps_its_lines():
    call, _ = parse_reply("```bash\ncd src\nls\n```")
    assert call.arguments == {"command": "cd src\nls"}


def test_several_calls_run_the_first_and_keep_only_it():
    second = '<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call>'
    call, canonical = parse_reply("First.\n" + STRICT + "\nThen.\n" + second)
    assert call == LS
    assert canonical == "First.\n\n" + STRICT


def test_tags_win_over_an_earlier_shell_fence():
    text = "I could run\n```bash\nrm -rf build\n```\nbut instead:\n" + STRICT
    call, canonical = parse_reply(text)
    assert call == LS
    assert canonical.endswith("but instead:\n\n" + STRICT)


def test_raw_newlines_inside_json_strings_are_accepted():
    text = '<tool_call>{"name": "bash", "arguments": {"command": "echo a\necho b"}}</tool_call>'
    assert parse_reply(text)[0].arguments == {"command": "echo a\necho b"}


def test_closing_tag_inside_an_argument_does_not_cut_the_call():
    call = ToolCall("bash", {"command": "echo '</tool_call>' && echo é"})
    assert parse_reply(format_tool_call(call)) == (call, format_tool_call(call))


def test_a_call_after_thinking_is_preferred_to_one_drafted_inside_it():
    draft = '<tool_call>{"name": "submit", "arguments": {}}</tool_call>'
    call, _ = parse_reply(f"<think>maybe {draft}? no.</think>\n{STRICT}")
    assert call == LS


def test_json_quoted_in_a_thought_without_arguments_is_not_a_call():
    with pytest.raises(FormatError, match="no tool call"):
        parse_reply('The config is {"name": "demo", "version": 2}.')


@pytest.mark.parametrize("text, problem", [
    ("", "empty"),
    ("   \n", "empty"),
    ("I think the bug is in parse().", "no tool call"),
    ('<tool_call>{"name": "bash", "arguments": {"command": }</tool_call>', "invalid"),
    ('<tool_call>{"arguments": {"command": "ls"}}</tool_call>', '"name"'),
    ('<tool_call>{"name": "bash", "arguments": [1, 2]}</tool_call>', "must be a JSON object"),
    ("<tool_call>bash ls</tool_call>", "no JSON object"),
])
def test_unusable_replies_say_how_a_valid_reply_looks(text, problem):
    with pytest.raises(FormatError) as caught:
        parse_reply(text)
    message = str(caught.value)
    assert problem in message
    assert '<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>' in message


def test_format_observation():
    assert format_observation("out") == "<tool_response>\nout\n</tool_response>"


# --- properties ------------------------------------------------------------------------------

FRAGMENTS = ["<tool_call>", "</tool_call>", "<think>", "</think>", "```", "```bash\n", "```json\n",
             "{", "}", '"name"', '"arguments"', '"function"', ":", ",", '"bash"', '"{}"', "[", "]",
             '{"name": "bash", "arguments": {"command": "ls"}}', '{"name": 1}', "\n", " ", '"',
             "\\", "null", '"parameters"', "{\"command\": \"x\"}"]
replies = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=30).map(
    "".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(st.one_of(replies, st.text()))
def test_any_reply_parses_or_raises_format_error_and_canonical_is_a_fixed_point(text):
    try:
        call, canonical = parse_reply(text)
    except FormatError as error:
        assert "<tool_call>" in str(error)
        return
    assert isinstance(call, ToolCall) and isinstance(call.arguments, dict)
    assert parse_reply(canonical) == (call, canonical)
    json.dumps(call.arguments)  # what the trajectory stores must serialize


@settings(max_examples=200, deadline=None)
@given(name=st.text(min_size=1, max_size=20).filter(lambda s: s.strip() == s and s),
       arguments=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
       thought=st.text(alphabet=st.characters(blacklist_characters="<`{"), max_size=40))
def test_strict_form_of_any_call_round_trips(name, arguments, thought):
    call = ToolCall(name, arguments)
    text = f"{thought}\n{format_tool_call(call)}"
    parsed, canonical = parse_reply(text)
    assert parsed == call
    expected_thought = thought.strip()
    assert canonical == (f"{expected_thought}\n\n" if expected_thought else "") + format_tool_call(call)
