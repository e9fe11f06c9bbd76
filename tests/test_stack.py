"""stack.yml read as faas-cli reads it: substitution, environment files, provider, languages
faasflow cannot run, --filter and --regex, secrets and namespaces."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_gateway import CallbackServer

from faasflow.errors import ConfigurationError
from faasflow.runtime.process import GatewayProcess
from faasflow.runtime.stack import DEFAULT_NAMESPACE, Stack, substitute

ENV = {"NAME": "value", "EMPTY": "", "LOWER": "mixed Case"}


@pytest.mark.parametrize(("text", "expected"), [
    ("${NAME}", "value"),
    ("$NAME/x", "value/x"),
    ("${MISSING}", ""),
    ("${MISSING:-fallback}", "fallback"),
    ("${EMPTY:-fallback}", "fallback"),
    ("${EMPTY-fallback}", ""),
    ("${MISSING-fallback}", "fallback"),
    ("${NAME:-fallback}", "value"),
    ("${MISSING:=set} then ${MISSING}", "set then set"),
    ("${LOWER^^}", "MIXED CASE"),
    ("${LOWER,,}", "mixed case"),
    ("${LOWER^}", "Mixed Case"),
    ("$$", "$"),
    ("pa$$word", "pa$word"),
    ("$${NAME}", "${NAME}"),
    ("cost: 5$", "cost: 5$"),
])
def test_substitution_as_faas_cli(text: str, expected: str) -> None:
    assert substitute(text, ENV) == expected


def write(root: Path, stack: str, handlers: tuple[str, ...] = ("fn",)) -> Path:
    for name in handlers:
        (root / name).mkdir(exist_ok=True)
        (root / name / "handler.py").write_text("def handle(event, context):\n    return 'ok'\n")
    path = root / "stack.yml"
    path.write_text(textwrap.dedent(stack).lstrip())
    return path


def test_environment_file_overrides_the_inline_environment(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text("environment:\n  A: from-file\n  C: only-file\n")
    path = write(tmp_path, """
        provider: {name: openfaas}
        functions:
          fn:
            lang: python3-http
            handler: ./fn
            environment: {A: inline, B: inline}
            environment_file: [env.yml]
    """)
    assert dict(Stack.load(path).functions["fn"].environment) == {
        "A": "from-file", "B": "inline", "C": "only-file"}


def test_substitution_applies_to_the_whole_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
        functions:
          fn:
            lang: python3-http
            handler: ./fn
            image: registry/${IMAGE:-fn}:${TAG^^}
    """)
    assert Stack.load(path, {"TAG": "dev"}).functions["fn"].image == "registry/fn:DEV"


@pytest.mark.parametrize("provider", ["{name: faas}", "{name: ''}", "{gateway: x}", "openfaas"])
def test_a_provider_other_than_openfaas_is_refused(tmp_path: Path, provider: str) -> None:
    path = write(tmp_path, f"""
        provider: {provider}
        functions:
          fn: {{lang: python3-http, handler: ./fn}}
    """)
    with pytest.raises(ConfigurationError, match="openfaas"):
        Stack.load(path)


def test_provider_gateway_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, """
        provider: {name: openfaas, gateway: "http://127.0.0.1:31112"}
        functions:
          fn: {lang: python3-http, handler: ./fn}
    """)
    assert Stack.load(path).gateway == "http://127.0.0.1:31112"


def test_functions_of_other_languages_are_skipped_not_refused(tmp_path: Path) -> None:
    path = write(tmp_path, """
        functions:
          fn: {lang: python3-http, handler: ./fn}
          web: {lang: node20, handler: ./web}
          api: {lang: golang-middleware, handler: ./api}
          box: {lang: dockerfile, handler: ./box}
    """)
    stack = Stack.load(path)
    assert list(stack.functions) == ["fn"]
    assert dict(stack.skipped) == {"web": "node20", "api": "golang-middleware",
                                   "box": "dockerfile"}


def test_a_stack_with_nothing_to_run_names_its_functions(tmp_path: Path) -> None:
    path = write(tmp_path, "functions:\n  web: {lang: node20, handler: ./web}\n", ())
    with pytest.raises(ConfigurationError, match=r"'web' \(lang 'node20'\)"):
        Stack.load(path)


SEVERAL = """
    functions:
      resize-gif: {lang: python3-http, handler: ./fn}
      resize-png: {lang: python3-http, handler: ./fn}
      thumbnail: {lang: python3-http, handler: ./fn}
"""


@pytest.mark.parametrize(("options", "expected"), [
    ({"filter": "resize-*"}, ["resize-gif", "resize-png"]),
    ({"filter": "thumbnail"}, ["thumbnail"]),
    ({"regex": "gif|thumb"}, ["resize-gif", "thumbnail"]),
    ({"filter": "resize-*", "regex": "png$"}, ["resize-png"]),
])
def test_filter_and_regex_select_functions(tmp_path: Path, options: dict[str, str],
                                           expected: list[str]) -> None:
    assert list(Stack.load(write(tmp_path, SEVERAL), **options).functions) == expected


def test_a_filter_matching_nothing_lists_the_functions(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="--filter 'nope'.*resize-gif"):
        Stack.load(write(tmp_path, SEVERAL), filter="nope")


def test_an_invalid_regex_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="--regex"):
        Stack.load(write(tmp_path, SEVERAL), regex="(")


def test_secrets_namespace_limits_and_requests_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, """
        functions:
          fn:
            lang: python3-http
            handler: ./fn
            namespace: team-a
            secrets: [api-key, db-password]
            limits: {memory: 128Mi, cpu: 100m}
            requests: {memory: 64Mi}
          other: {lang: python3-http, handler: ./fn}
    """)
    stack = Stack.load(path)
    fn = stack.functions["fn"]
    assert (fn.namespace, fn.secrets) == ("team-a", ("api-key", "db-password"))
    assert dict(fn.limits) == {"memory": "128Mi", "cpu": "100m"}
    assert dict(fn.requests) == {"memory": "64Mi"}
    assert stack.functions["other"].namespace == DEFAULT_NAMESPACE
    assert stack.namespaces == (DEFAULT_NAMESPACE, "team-a")


@pytest.mark.parametrize("secrets", ["api-key", "[1]", "['']"])
def test_malformed_secrets_are_refused(tmp_path: Path, secrets: str) -> None:
    path = write(tmp_path, f"functions:\n  fn: {{lang: python3-http, handler: ./fn, "
                           f"secrets: {secrets}}}\n")
    with pytest.raises(ConfigurationError, match="secrets"):
        Stack.load(path)


def test_faasflow_up_serves_only_the_filtered_functions(tmp_path: Path) -> None:
    path = write(tmp_path, """
        provider: {name: openfaas}
        functions:
          keep-me: {lang: python3-http, handler: ./fn}
          drop-me: {lang: python3-http, handler: ./missing}
          web: {lang: node20, handler: ./web}
    """)
    with GatewayProcess(path, data_dir=tmp_path / "data", processes=1,
                        extra=["--filter", "keep-*"]) as gateway:
        names = [f["name"] for f in gateway.get("/system/functions").json()]
        assert names == ["keep-me"]
        assert gateway.post("/function/keep-me").text == "ok"
    # drop-me's handler does not exist: it was never loaded; web is not warned about
    assert not any("node20" in line for line in gateway.output)


def test_faasflow_up_proxies_other_languages_to_the_upstream_gateway(tmp_path: Path) -> None:
    path = write(tmp_path, """
        functions:
          fn: {lang: python3-http, handler: ./fn}
          web: {lang: node20, handler: ./web}
    """)
    upstream = CallbackServer()
    try:
        with GatewayProcess(path, data_dir=tmp_path / "data", processes=1,
                            extra=["--upstream-gateway", upstream.url]) as gateway:
            assert sum("web" in line and "node20" in line for line in gateway.output) == 1
            reply = gateway.post("/function/web.openfaas-fn/deep?q=1", data=b"to node")
            assert reply.status_code == 200
            called, _, body = upstream.next()
            assert (called, body) == ("/function/web.openfaas-fn/deep?q=1", b"to node")
    finally:
        upstream.close()
