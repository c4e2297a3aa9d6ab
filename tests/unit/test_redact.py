"""mask_secrets: credential values in commands, headers and URIs become `****`."""

from __future__ import annotations

from urllib.parse import quote, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.redact import MASK, is_credential_name, mask_argv, mask_command, mask_secrets


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
        ("/x?password=", "/x?password="),  # an empty value shows no secret
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


# --- what operators type: each form with a unique marker (issue 14) -----------------------------
MARKER = "Hunter2PlainPw!"
FORMS = [
    f"mysql -uroot -p{MARKER}",  # attached short flag
    f"mysql -u root -p {MARKER} appdb",
    f"mysqldump --password={MARKER} db",
    f"curl -u admin:{MARKER} https://db.internal/",
    f"curl --user admin:{MARKER} https://db.internal/",
    f"redis-cli -a {MARKER}",
    f"redis-cli -h r AUTH default {MARKER}",
    f"psql --password {MARKER}",
    f"sshpass -p {MARKER} ssh host",
    f"mongosh -u admin -p {MARKER}",
    f"docker login -u bob -p {MARKER} registry.io",
    f"ldapsearch -D cn=admin -w {MARKER} -b dc=x",
    f"kubectl create secret generic x --from-literal=db-pass={MARKER}",
    f"openssl enc -aes256 -pass pass:{MARKER} -in f",
    f"cli --token {MARKER}",
    f"cli --api-key={MARKER}",
    f'curl -H "Authorization: Bearer {MARKER}" https://x',
    f"curl -H 'Authorization: Token {MARKER}' https://x",
    f"Authorization: Basic {MARKER}",
    f"Proxy-Authorization: Negotiate {MARKER}",
    f"Authorization: AWS4-HMAC-SHA256 Credential=AKIA/20240501, SignedHeaders=host, Signature={MARKER}",
    f"git clone https://deploy:{MARKER}@github.com/org/repo.git",
    f"wget https://example.com/f?access_token={MARKER}&x=1",
    f"export DB_PASSWORD={MARKER}",
    f"GITHUB_TOKEN={MARKER} make release",
    f"env STRIPE_KEY={MARKER} app",
    f"PGPASSWORD={MARKER} psql -h db",
    f'{{"aws_secret_access_key":"{MARKER}","region":"eu"}}',
    f'{{"db_password": "{MARKER}"}}',
    f'{{"token":"{MARKER}"}}',
    f'{{"config.json":"{{\\"apiKey\\":\\"{MARKER}\\"}}"}}',  # JSON inside a JSON string
    f"password: {MARKER}",
    f"db.password={MARKER}",
    f"clientSecret: '{MARKER}'",
    f"{{password: {MARKER}, user: bob}}",
]


@pytest.mark.parametrize("text", FORMS)
def test_every_form_operators_type_is_masked(text: str) -> None:
    """Each credential form of the issue loses its value; the mask is there and the text around stays."""
    masked = mask_secrets(text)
    assert MARKER not in masked and "Hunter2" not in masked
    assert MASK in masked
    assert mask_secrets(masked) == masked


@pytest.mark.parametrize(("text", "masked"), [
    ("mysql -uroot -pHunter2PlainPw!", "mysql -uroot -p****"),
    ("curl -u admin:Hunter2PlainPw! https://x", "curl -u admin:**** https://x"),
    ("redis-cli -a Hunter2PlainPw!", "redis-cli -a ****"),
    ('{"aws_secret_access_key":"wJalr","db_password":"x1"}', '{"aws_secret_access_key":"****","db_password":"****"}'),
    ('{"token":"eyJhbGciOi"}', '{"token":"****"}'),
    ("git clone https://u:tok@github.com/x", "git clone https://u:****@github.com/x"),
])
def test_the_issue_examples(text: str, masked: str) -> None:
    """The leaks the issue reported are masked, keeping the user, key and tool readable."""
    assert mask_secrets(text) == masked


@pytest.mark.parametrize("text", [
    "docker run -p 8080:80 -u 1000:1000 nginx",  # docker's -p is a port, -u a uid:gid
    "kubectl port-forward mysql-0 -p 3306",  # not mysql: the pod's name
    "ssh -p 2222 user@host",
    "kubectl patch deploy x -p '{\"spec\":{\"replicas\":2}}'",
    '{"key":"node-role.kubernetes.io/master","operator":"Exists"}',  # a toleration's key
    '{"secretName":"db-creds","secretKeyRef":{"name":"db","key":"password"}}',  # references, no values
    '{"automountServiceAccountToken": true, "tokenExpirationSeconds": 3600}',
    "--authorization-mode=Node,RBAC --token-auth-file=/etc/kubernetes/tokens.csv",
    "AUTH_ENABLED=true", "Unauthorized access", "mysql -u root -p", "psql -W",
    "system:serviceaccount:kube-system:replicaset-controller",
])
def test_evidence_that_is_no_credential_is_kept(text: str) -> None:
    """Ports, uids, references to Secrets, switches and durations are no credentials: left as written."""
    assert mask_secrets(text) == text


@pytest.mark.parametrize(("args", "masked"), [
    (["psql", "--password", "Hunter2Secret"], ["psql", "--password", "****"]),
    (["mysql", "-p", "x2", "-pY3"], ["mysql", "-p", "****", "-p****"]),
    (["curl", "-u", "a:b", "https://x"], ["curl", "-u", "a:****", "https://x"]),
    (["redis-cli", "-a", "pw"], ["redis-cli", "-a", "****"]),
    (["sh", "-c", "mysql -uroot -pHunter2"], ["sh", "-c", "mysql -uroot -p****"]),
    (["kubectl", "create", "secret", "generic", "s", "--from-literal", "k=v"],
     ["kubectl", "create", "secret", "generic", "s", "--from-literal", "k=****"]),
    (["cli", "--token", "-v"], ["cli", "--token", "-v"]),  # a dash-led word is the next flag
    (["docker", "run", "-p", "80:80"], ["docker", "run", "-p", "80:80"]),
])
def test_argv_masks_the_credential_in_the_same_argument_or_the_next(args: list[str], masked: list[str]) -> None:
    """mask_argv: a flag's credential is masked whether attached or in the next argument."""
    assert mask_argv(args) == masked
    assert mask_command(args) == " ".join(masked)


@pytest.mark.parametrize("uri", [
    "/api/v1/namespaces/d/pods/p/exec?command=psql+--password+Hunter2Secret&container=c",
    "/api/v1/namespaces/d/pods/p/exec?command=psql%20--password%20Hunter2Secret&container=c",
    "/api/v1/namespaces/d/pods/p/exec?command=psql&command=--password&command=Hunter2Secret",
    "/api/v1/namespaces/d/pods/p/exec?command=cli&command=--token&command=Hunter2Secret",
    "/api/v1/namespaces/d/pods/p/exec?command=mysql&command=-pHunter2Secret&stdin=true",
    "/api/v1/namespaces/d/pods/p/exec?command=mysql&command=%2DpHunter2Secret",
    "/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=curl+-u+a%3AHunter2Secret+https%3A%2F%2Fx",
    "/api/v1/namespaces/d/pods/p/exec?command=redis-cli&command=-a&command=Hunter2Secret",
    "/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=PGPASSWORD%3DHunter2Secret+psql",
])
def test_uri_of_an_exec_is_masked_in_every_encoding(uri: str) -> None:
    """ka.uri keeps no credential of the command, whether `+`, %20 or one parameter per argument."""
    masked = mask_secrets(uri)
    assert "Hunter2Secret" not in masked and MASK in masked
    assert masked.startswith("/api/v1/namespaces/d/pods/p/exec?command=")
    assert mask_secrets(masked) == masked


def test_unchanged_query_parameters_keep_their_encoding() -> None:
    """Only masked parameters are re-encoded; the rest of the URI is as sent."""
    uri = "/api/v1/x/exec?command=ls%20-la&command=%2Ftmp&container=c%2B"
    assert mask_secrets(uri + "&token=abc") == uri + "&token=****"


def test_credential_names() -> None:
    """Names that say password/token/secret/key are credentials; references and switches are not."""
    for name in ("DB_PASSWORD", "dbPassword", "GITHUB_TOKEN", "client_secret", "STRIPE_KEY", "tls.key",
                 "aws_secret_access_key", "apiKey", "PGPASSWORD", "auth", "passphrase"):
        assert is_credential_name(name), name
    for name in ("secretName", "token-file", "tokenExpirationSeconds", "AUTH_ENABLED", "image", "key_id",
                 "authorization-mode", "PATH"):
        assert not is_credential_name(name), name
    assert not is_credential_name("key", env_style=False) and is_credential_name("api_key", env_style=False)


# --- properties -------------------------------------------------------------------------------------
_PIECES = ["--", "-p", "-a", "-u", "token", "password", "PASSWORD", "=", ":", " ", "'", '"', '\\"', "abc", "Bearer",
           "Authorization", "?", "&", "command=", "+", "%20", "%2", "mysql", "redis-cli", "curl", "x", ";", "-",
           "****", "://", "@", "{", "}", ",", "\\", "\n", "pass:", "AUTH", "export", "_KEY", "é", "\udc80"]


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), st.lists(st.sampled_from(_PIECES), max_size=16).map("".join)))
def test_masking_never_raises_and_is_idempotent_on_any_text(text: str) -> None:
    """Any string (lone surrogates, stray escapes, broken percent-encoding) is masked without an
    exception, and masking a masked text changes nothing."""
    once = mask_secrets(text)
    assert mask_secrets(once) == once


# Characters a URL's user:password or query may hold unencoded (`/`, `@`, `#` would end them).
_SECRET = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.!$^*~-]{5,20}", fullmatch=True).filter(
    lambda s: s.lower() not in ("true", "false", "null") and MASK not in s)
_POSITIONS = [
    "mysql -uroot -p{}", "mysql -p {} db", "curl -u admin:{} https://x", "redis-cli -a {}", "psql --password {}",
    "cli --token={}", "cli --token {}", "Authorization: Bearer {}", "Authorization: Custom {}", "DB_PASSWORD={}",
    "export API_TOKEN={}", "https://u:{}@host/x", "/x?access_token={}&y=1", '{{"password":"{}"}}',
    '{{"db_password": "{}", "x": 1}}', "password: {}", "--from-literal=k={}", "openssl -pass pass:{}",
    "sshpass -p {} ssh h", "docker login -u u -p {}",
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_POSITIONS), _SECRET, st.sampled_from(["", "sh -c ", "echo 1; ", "x "]))
def test_a_marker_is_masked_in_every_supported_position(position: str, secret: str, before: str) -> None:
    """Whatever the secret's characters, in every supported position it is gone and the mask is there."""
    masked = mask_secrets(before + position.format(secret))
    assert secret not in masked
    assert MASK in masked


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([["mysql", "-p{}"], ["mysql", "-p", "{}"], ["psql", "--password", "{}"],
                        ["cli", "--token", "{}"], ["curl", "-u", "a:{}"], ["redis-cli", "-a", "{}"],
                        ["sh", "-c", "mysql -p{} db"]]),
       _SECRET.filter(lambda s: not s.startswith("-")), st.sampled_from(["%20", "+"]))
def test_a_command_is_masked_alike_in_the_uri_and_ka_exec_command(args: list[str], secret: str, space: str) -> None:
    """The same command: masked as ka.exec.command and inside the URI, whatever the encoding."""
    argv = [arg.format(secret) for arg in args]
    query = "&".join("command=" + quote(arg, safe="").replace("%20", space) for arg in argv)
    assert secret not in mask_command(argv)
    masked_uri = mask_secrets(f"/api/v1/namespaces/n/pods/p/exec?{query}&container=c")
    assert secret not in masked_uri and quote(secret, safe="") not in masked_uri
    assert secret not in unquote_plus(masked_uri)
