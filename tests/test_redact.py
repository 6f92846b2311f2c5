"""Credentials are masked before they enter a trajectory or leave for a server; code is not."""

from __future__ import annotations

import pytest

from sera.redact import mask_secrets
from sera.agent.trajectory import Trajectory

KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB\n"
       "-----END OPENSSH PRIVATE KEY-----")


@pytest.mark.parametrize("secret, kind", [
    (KEY, "private key"),
    ("AKIAIOSFODNN7EXAMPLE", "AWS access key"),
    ("ghp_" + "a1B2" * 9, "GitHub token"),
    ("sk-proj-" + "x9Y8" * 8, "API key"),
    ("hf_" + "AbCd" * 9, "Hugging Face token"),
    ("xoxb-123456789012-abcdefABCDEF", "Slack token"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "JSON web token"),
])
def test_token_shapes_are_masked_by_kind(secret, kind):
    masked = mask_secrets(f"output before\n{secret}\noutput after")
    assert masked == f"output before\n[sera: {kind} masked]\noutput after"


def test_a_private_key_cut_off_by_the_output_cap_is_masked_to_the_end():
    assert "b3Blbn" not in mask_secrets(KEY[:80])


@pytest.mark.parametrize("text, hidden", [
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtn"),
    ('DB_PASSWORD="hunter2hunter2"', "hunter2"),
    ("export API_TOKEN=Zm9vYmFyYmF6cXV4", "Zm9vYmFy"),
    ("machine api.example.com login me password hunter2", "hunter2"),
    ("https://user:s3cr3tpass@example.com/repo.git", "s3cr3tpass"),
])
def test_assigned_and_embedded_passwords_are_masked(text, hidden):
    masked = mask_secrets(text)
    assert hidden not in masked and "masked]" in masked


@pytest.mark.parametrize("code", [
    "token = self.next_token()",
    "password = os.environ['DB_PASSWORD']",
    "secret_key = default_secret_key",
    "def check_password(password: str) -> bool:",
    "if token_count >= max_tokens:",
    "The password is wrong; try again.",
    "sk = key[:4]",
    'api_key_header = "X-API-Key"',
    'token_pattern = "[A-Za-z_]+"',
])
def test_ordinary_code_is_left_alone(code):
    assert mask_secrets(code) == code


def test_a_trajectory_masks_what_is_not_the_models_own():
    trajectory = Trajectory()
    trajectory.add("user", "cat ~/.aws/credentials:\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG")
    trajectory.add("assistant", "I will not repeat AKIAIOSFODNN7EXAMPLE")
    assert "wJalrXUtn" not in trajectory.messages[0]["content"]
    assert trajectory.messages[1]["content"] == "I will not repeat AKIAIOSFODNN7EXAMPLE"
