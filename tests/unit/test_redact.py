"""mask_secrets: credential values in commands, headers and URIs become `****`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.redact import MASK, mask_secrets


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("--token=abc", "--token=****"),
        ("--password abc", "--password ****"),
        ("password=abc", "password=****"),
        ("TOKEN: abc", "TOKEN: ****"),
        ("password = abc", "password = ****"),
        ("mysql -u root --password=hunter2 db", "mysql -u root --password=**** db"),
        ("--token=abc --password=def", "--token=**** --password=****"),
        ("export GITHUB_TOKEN=ghp_123", "export GITHUB_TOKEN=****"),
        ("AWS_SECRET_ACCESS_KEY=xyz", "AWS_SECRET_ACCESS_KEY=****"),
        ("--api-key=xyz", "--api-key=****"),
        ("--client_secret xyz", "--client_secret ****"),
        ("secret-key: abc", "secret-key: ****"),
        ("--token=a=b", "--token=****"),
    ],
)
def test_flag_and_key_values_are_masked(text: str, masked: str) -> None:
    """The value after a credential-looking flag or key is masked; the key stays readable."""
    assert mask_secrets(text) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Authorization: Bearer abc.def", "Authorization: Bearer ****"),
        ("Basic dXNlcjpwYXNz", "Basic ****"),
        ('curl -H "Authorization: Bearer abc" http://x', 'curl -H "Authorization: Bearer ****" http://x'),
    ],
)
def test_authorization_schemes_are_masked(text: str, masked: str) -> None:
    """Bearer and Basic credentials are masked, keeping the scheme word."""
    assert mask_secrets(text) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("--password='abc'", "--password='****'"),
        ('--password="abc def"', '--password="****"'),
        ('password: "abc"', 'password: "****"'),
        ('--token "abc"', '--token "****"'),
        ('Authorization: Bearer "abc"', 'Authorization: Bearer "****"'),
    ],
)
def test_quoted_values_are_masked_whole(text: str, masked: str) -> None:
    """A quoted credential (even with spaces) is masked entirely, quotes kept."""
    assert mask_secrets(text) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("/api/v1/x?token=abc&watch=true", "/api/v1/x?token=****&watch=true"),
        ("/x?a=1&access_key=abc", "/x?a=1&access_key=****"),
        ("/x?password=", "/x?password=****"),
    ],
)
def test_query_parameters_are_masked(text: str, masked: str) -> None:
    """Credential-looking query parameters lose their value, other parameters stay."""
    assert mask_secrets(text) == masked


@pytest.mark.parametrize("text", ["ls -la /tmp", "kubectl get pods -n kube-system", "/api/v1/namespaces", "",
                                  "--token -v", "--token=", "bearer", "echo hello world"])
def test_text_without_credential_values_is_unchanged(text: str) -> None:
    """Nothing is masked when no credential value follows a credential key."""
    assert mask_secrets(text) == text


def test_value_starting_with_a_dash_is_the_next_flag() -> None:
    """`--token -v` keeps `-v`: a dash-led word is a flag, not the token."""
    assert mask_secrets("--token -v --password x") == "--token -v --password ****"


def test_separators_end_a_bare_value() -> None:
    """`&` and `;` end a bare value (query or shell separators)."""
    assert mask_secrets("--password=ab;ls") == "--password=****;ls"
    assert mask_secrets("password=ab&x=1") == "password=****&x=1"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["--", "token", "password", "=", ":", " ", "'", '"', "abc", "Bearer", "?", "&",
                                  "x", ";", "-", "****"]), max_size=12).map("".join))
def test_masking_is_idempotent(text: str) -> None:
    """Masking twice gives the same text as masking once."""
    once = mask_secrets(text)
    assert mask_secrets(once) == once


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["--token=", "--password ", "password=", "TOKEN: ", "Bearer ", "?secret="]),
       st.from_regex(r"[A-Za-z0-9+/_.]{6,20}", fullmatch=True))
def test_secret_never_survives(prefix: str, secret: str) -> None:
    """For a credential key followed by a secret, the secret is gone and the mask is there."""
    masked = mask_secrets(f"cmd {prefix}{secret} tail")
    assert secret not in masked
    assert MASK in masked
    assert masked.endswith(" tail")
