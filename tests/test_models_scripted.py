"""The scripted model (replays replies from a file) and the backend registry's errors."""

from __future__ import annotations

import json
import threading

import pytest

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.base import ChatModel
from sera.models.registry import BACKENDS, load_model
from sera.models.scripted import approx_tokens


def write_script(tmp_path, data) -> str:
    path = tmp_path / "replies.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def conversation(assistant_turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a coding agent."},
                {"role": "user", "content": "Fix the bug."}]
    for i in range(assistant_turns):
        messages += [{"role": "assistant", "content": f"step {i}"},
                     {"role": "user", "content": "<tool_response>\nok\n</tool_response>"}]
    return messages


def test_replays_reply_by_number_of_assistant_turns(tmp_path):
    model = load_model(f"scripted:{write_script(tmp_path, ['first', 'second', 'third'])}")
    assert isinstance(model, ChatModel)
    assert model.concurrent is True
    assert model.complete(conversation(0))[0].text == "first"
    assert model.complete(conversation(2))[0].text == "third"
    # a new candidate starts again from the first reply
    assert model.complete(conversation(0))[0].text == "first"
    assert model.complete(conversation(1))[0].text == "second"


def test_accepts_replies_object_and_returns_n_copies(tmp_path):
    model = load_model(f"scripted:{write_script(tmp_path, {'replies': ['a reply']})}")
    completions = model.complete(conversation(0), n=3)
    assert [c.text for c in completions] == ["a reply"] * 3
    assert all(c.finish_reason == "stop" for c in completions)


def test_token_counts_are_one_per_four_characters(tmp_path):
    model = load_model(f"scripted:{write_script(tmp_path, ['x' * 9])}")
    messages = [{"role": "user", "content": "y" * 8}]
    completion = model.complete(messages)[0]
    assert completion.completion_tokens == approx_tokens("x" * 9) == 3
    assert completion.prompt_tokens == 2
    assert completion.seconds >= 0


def test_past_the_end_says_how_many_replies(tmp_path):
    model = load_model(f"scripted:{write_script(tmp_path, ['only', 'two'])}")
    with pytest.raises(ModelError, match="only 2 replies"):
        model.complete(conversation(2))


def test_stop_strings_and_max_tokens_cut_like_a_real_backend(tmp_path):
    reply = 'I will run it.\n<tool_call>\n{"name": "bash"}\n</tool_call> trailing'
    model = load_model(f"scripted:{write_script(tmp_path, [reply])}")
    cut = model.complete(conversation(0), stop=["</tool_call>"])[0]
    assert cut.text == 'I will run it.\n<tool_call>\n{"name": "bash"}\n'
    assert cut.finish_reason == "stop"
    short = model.complete(conversation(0), max_tokens=2)[0]
    assert short.text == reply[:8]
    assert short.finish_reason == "length"


@pytest.mark.parametrize("content, match", [
    (None, "not found"),
    ("{not json", "not valid JSON"),
    ('{"answers": ["a"]}', "list of reply strings"),
    ('["a", 3]', "list of reply strings"),
])
def test_bad_script_file_says_what_to_fix(tmp_path, content, match):
    path = tmp_path / "script.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ModelError, match=match):
        load_model(f"scripted:{path}")


def test_missing_argument_shows_the_spec_form():
    with pytest.raises(ModelError, match="scripted:/path/to/replies.json"):
        load_model("scripted:")


def test_safe_from_many_threads(tmp_path):
    model = load_model(f"scripted:{write_script(tmp_path, ['a', 'b'])}", ModelConfig())
    results: list[str] = []

    def ask(turns: int) -> None:
        results.append(model.complete(conversation(turns))[0].text)

    threads = [threading.Thread(target=ask, args=(i % 2,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["a"] * 4 + ["b"] * 4
    model.close()
    model.close()  # safe twice


def test_registry_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ModelError) as error:
        load_model("nosuchbackend:/some/model")
    message = str(error.value)
    assert "nosuchbackend" in message
    for name in BACKENDS:
        assert name in message


def test_conversations_pick_replies_by_the_first_user_message(tmp_path):
    script = tmp_path / "roles.json"
    script.write_text(json.dumps({"conversations": [{"when": "Answer yes or no", "replies": ["yes"]},
                                                    {"when": "write an issue", "replies": ["Issue"]}],
                                  "replies": ["default"]}))
    model = load_model(f"scripted:{script}", ModelConfig())
    ask = lambda text: model.complete([{"role": "user", "content": text}])[0].text  # noqa: E731
    assert ask("Please write an issue about it") == "Issue"
    assert ask("Is it valid? Answer yes or no.") == "yes"
    assert ask("something else") == "default"
    script.write_text(json.dumps({"conversations": [{"replies": ["x"]}]}))
    with pytest.raises(ModelError, match="conversations"):
        load_model(f"scripted:{script}", ModelConfig())
