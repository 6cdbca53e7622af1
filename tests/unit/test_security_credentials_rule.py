"""The opt-in rule for credentials and the evaluation image (``core.credentials``), as pure functions."""

from __future__ import annotations

import pytest

from canopy_operator.core.credentials import (
    ALLOWED_URLS,
    LABEL,
    CredentialsRefused,
    Destination,
    SecretRef,
    allowed_prefixes,
    check_length,
    check_opt_in,
    image_allowed,
    image_refusal,
    normalize_url,
    url_allowed,
)

REF = SecretRef("team-a", "repo", "spec.delivery.git.credentialsSecret")
LABELS = {LABEL: "true"}


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTPS://Git.Example.COM:443/Team/Repo.git", "https://git.example.com/Team/Repo.git"),
        ("https://user:pass@git.example.com/team/", "https://git.example.com/team"),
        ("http://git.example.com:80/team", "http://git.example.com/team"),
        ("http://git.example.com:8080/team", "http://git.example.com:8080/team"),
        ("git@git.example.com:team/repo.git", "ssh://git.example.com/team/repo.git"),
        ("ssh://git@git.example.com:22/team/repo.git", "ssh://git.example.com/team/repo.git"),
        ("ssh://git@git.example.com:2222/team/repo.git", "ssh://git.example.com:2222/team/repo.git"),
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),
        ("file:///srv/git/repo.git", "file:///srv/git/repo.git"),
    ],
)
def test_urls_are_normalised_before_matching(url: str, normal: str) -> None:
    assert normalize_url(url) == normal


@pytest.mark.parametrize(
    "url",
    [
        "https://git.example.com/team/../evil/repo.git",
        "https://git.example.com/team/%2e%2e/evil",
        "https://git.example.com/team%2Fevil",
        "https://git.example.com/team\\..\\evil",
        "https://git.example.com:notaport/team",
        "ftp://git.example.com/team",
        "https:///team",
        "https://git.example.com/team#frag",
    ],
)
def test_urls_that_could_escape_a_prefix_match_nothing(url: str) -> None:
    assert normalize_url(url) is None
    assert not url_allowed(url, ("https://git.example.com",))


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://git.example.com/team/repo.git", True),
        ("https://git.example.com/team", True),
        ("https://GIT.example.com:443/team/sub/repo.git", True),
        ("https://git.example.com/team-evil/repo.git", False),
        ("https://git.example.com/teamx", False),
        ("https://git.example.com.attacker.example/team/repo.git", False),
        ("https://git.example.com:8443/team/repo.git", False),
        ("http://git.example.com/team/repo.git", False),
        ("https://git.example.com/other/repo.git", False),
    ],
)
def test_a_prefix_matches_only_at_a_path_segment_boundary(url: str, allowed: bool) -> None:
    assert url_allowed(url, allowed_prefixes("https://git.example.com/team/")) is allowed


def test_the_annotation_lists_prefixes_by_comma_or_newline_and_drops_unusable_ones() -> None:
    text = " https://a.example/x ,\nssh://git@b.example/y\n\nnot a url, https://c.example/../z"
    assert allowed_prefixes(text) == ("https://a.example/x", "ssh://b.example/y")


def test_a_host_root_prefix_allows_the_whole_host_and_nothing_else() -> None:
    prefixes = allowed_prefixes("https://git.example.com")
    assert url_allowed("https://git.example.com/any/repo.git", prefixes)
    assert not url_allowed("https://git.example.community/any/repo.git", prefixes)


def check(labels: dict[str, str], annotations: dict[str, str], url: str, insecure: bool = False) -> None:
    dest = Destination("spec.delivery.git.repository", url)
    check_opt_in(REF, labels, annotations, [dest], allow_insecure_http=insecure)


@pytest.mark.parametrize(
    ("labels", "annotations", "url", "words"),
    [
        ({}, {ALLOWED_URLS: "https://git.example.com"}, "https://git.example.com/r", [LABEL]),
        ({LABEL: "yes"}, {ALLOWED_URLS: "https://git.example.com"}, "https://git.example.com/r", [LABEL]),
        (LABELS, {}, "https://git.example.com/r", [ALLOWED_URLS]),
        (LABELS, {ALLOWED_URLS: "https://git.example.com/a"}, "https://git.example.com/b", ["repository"]),
        (LABELS, {ALLOWED_URLS: "http://git.example.com"}, "http://git.example.com/r", ["http://"]),
    ],
    ids=["no-label", "label-not-true", "no-annotation", "foreign-url", "plain-http"],
)
def test_a_secret_that_did_not_opt_in_is_refused_naming_it(
    labels: dict[str, str], annotations: dict[str, str], url: str, words: list[str]
) -> None:
    with pytest.raises(CredentialsRefused) as info:
        check(labels, annotations, url)
    assert info.value.reason == "CredentialsNotAllowed"
    assert str(info.value).startswith("Secret team-a/repo (spec.delivery.git.credentialsSecret)")
    for word in words:
        assert word in str(info.value)


def test_plain_http_is_allowed_only_with_the_operator_flag() -> None:
    check(LABELS, {ALLOWED_URLS: "http://git.example.com"}, "http://git.example.com/r", insecure=True)


def test_a_long_url_is_cut_in_the_message() -> None:
    with pytest.raises(CredentialsRefused) as info:
        check(LABELS, {ALLOWED_URLS: "https://a.example"}, "https://b.example/" + "x" * 3000)
    assert len(str(info.value)) < 400


def test_a_short_credential_is_refused_naming_the_key_not_the_value() -> None:
    with pytest.raises(CredentialsRefused, match="key token is shorter than 8") as info:
        check_length(REF, "token", "abc1234")
    assert "abc1234" not in str(info.value)
    check_length(REF, "token", "abcd1234")


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("quay.io/canopy/operator:1.0", True),  # the operator's own
        ("quay.io/canopy/evals:2.1", True),
        ("quay.io/canopy/evals:2.1-rc", True),
        ("registry.example/exact:1", True),
        ("registry.example/exact:1-evil", False),
        ("quay.io/canopy/evals", False),
        ("quay.io/canopy/operator:1.0-evil", False),
        ("docker.io/attacker/miner", False),
    ],
)
def test_the_evaluation_image_is_the_operators_or_on_its_allow_list(image: str, allowed: bool) -> None:
    patterns = ("quay.io/canopy/evals:*", "registry.example/exact:1")
    assert image_allowed(image, "quay.io/canopy/operator:1.0", patterns) is allowed


@pytest.mark.parametrize("pattern", ["*", "", " "])
def test_an_allow_list_entry_that_would_allow_any_image_allows_none(pattern: str) -> None:
    """A bare ``*`` would hand the choice back to the spec, which rule 1 forbids."""
    assert not image_allowed("docker.io/attacker/miner", None, (pattern,))


def test_an_image_refusal_names_the_field_and_the_setting() -> None:
    message = image_refusal("docker.io/attacker/miner", "quay.io/canopy/operator:1.0", ())
    assert message is not None
    assert "spec.evaluation.image" in message
    assert "CANOPY_EVALUATION_IMAGES" in message
    assert image_refusal(None, "quay.io/canopy/operator:1.0", ()) is None
    assert "CANOPY_OPERATOR_IMAGE" in (image_refusal(None, None, ()) or "")
