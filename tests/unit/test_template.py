"""The one template engine (shared/template.py, shared/gofmt.py) against Go's text/template and fmt with Docker's
functions. Every expected value here was checked against Go 1.19's text/template running the same template over
the same JSON, but where a comment says why ours differs; pure logic, no root, network or tools."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import Kind, StrataError
from shared.gofmt import go_str, sprintf
from shared.template import HEADER_FUNCS, Template, render

ROW = {"ID": "0123456789ab", "Names": "webserver", "Status": "Up 5 Minutes", "Repository": "alpine", "Tag": "3.19"}
DOC = {"Name": "/web", "State": {"Pid": 42, "Running": True, "ExitCode": 0}, "Args": ["-c", "x y"],
       "Mounts": [{"Source": "/a", "Destination": "/x"}, {"Source": "/b", "Destination": "/y"}],
       "Config": {"Env": ["A=1", "B=2"], "Labels": {"z": "1", "a": "2"}, "Cmd": None, "Empty": []},
       "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}, "F": 2.5, "Big": 1000000.0}


def run(template: str, data: Any = None) -> str:
    return Template(template).render(ROW if data is None else data)


# -- the two command lines issue 19 names -------------------------------------------------------------------------


def test_printf_and_lower_as_docker_ps() -> None:
    assert run('{{printf "%.3s" .Names}}|{{lower .Status}}') == "web|up 5 minutes"


def test_printf_and_upper_as_docker_images() -> None:
    assert run('{{printf "%.3s" .Repository}}|{{upper .Tag}}', {"Repository": "alpine", "Tag": "latest"}) == \
        "alp|LATEST"


# -- Docker's functions -------------------------------------------------------------------------------------------

DOCKER_FUNCTIONS = [
    # Not Go's over a map (it sorts the keys): our documents stand for Docker's typed structs, whose JSON keeps
    # their fields' order (Docker's {{json .State}} is {"Status":...,"Running":...}).
    ("{{json .State}}", '{"Pid":42,"Running":true,"ExitCode":0}'),
    ("{{json .Args}}", '["-c","x y"]'),
    ("{{.Args | json}}", '["-c","x y"]'),
    ('{{json "<&>"}}', '"<&>"'),  # no HTML escaping, as Docker's encoder
    ("{{json .Config.Cmd}}", "null"),
    ("{{json .Nope}}", "null"),
    ("{{json .Big}}", "1000000"),
    ('{{join .Args ","}}', "-c,x y"),  # Go wants a []string, which Docker's typed Args is; a JSON list is one here
    ('{{join .Config.Empty ","}}', ""),  # the same
    ('{{split "a:b:c" ":"}}', "[a b c]"),
    ('{{index (split "a:b" ":") 1}}', "b"),
    ('{{len (split "a,b" ",")}}', "2"),
    ('{{title "hello wORLD foo_bar x-y 1a"}}', "Hello WORLD Foo_bar X-Y 1a"),
    ("{{lower .Name}}", "/web"),
    ('{{upper "Up 5 Minutes"}}', "UP 5 MINUTES"),
    ('{{pad "x" 2 1}}|', "  x |"),
    ('{{pad "" 2 1}}|', "|"),  # Docker's pad leaves an empty string empty
    ('{{truncate "abcdef" 3}}', "abc"),
    ('{{truncate "ab" 3}}', "ab"),
    ('{{upper (printf "%s-%d" "x" 1)}}', "X-1"),
]


@pytest.mark.parametrize(("template", "expected"), DOCKER_FUNCTIONS)
def test_docker_functions(template: str, expected: str) -> None:
    assert run(template, DOC) == expected


# -- Go's functions -----------------------------------------------------------------------------------------------

GO_FUNCTIONS = [
    ('{{index .Config.Labels "a"}}', "2"),
    ('{{index .Config.Labels "nope"}}', "<no value>"),
    ("{{index .Args 1}}", "x y"),
    ("{{(index .Mounts 1).Destination}}", "/y"),
    ('{{index "ab" 0}}', "97"),
    ("{{len .Mounts}} {{len .Config.Labels}} {{len .Name}}", "2 2 4"),
    ('{{slice "hello" 1 3}} {{slice .Args 1}}', "el [x y]"),
    ("{{not .State.Running}} {{not .Config.Cmd}}", "false true"),
    ('{{and .State.Running .Name}} {{and .State.Pid 0 "x"}} {{or .Config.Cmd .Config.Empty "d"}}', "/web 0 d"),
    ("{{if and .State.Running (gt .State.Pid 10)}}big{{end}}", "big"),
    ('{{eq .Name "/db" "/web"}} {{ne .State.Pid 42}} {{eq .Config.Cmd nil}}', "true false true"),
    ('{{lt 1 2}} {{le 2 2}} {{gt "b" "a"}} {{ge 1.5 2.5}}', "true true true false"),
    ('{{print "a" "b" 1 2 true}}', "ab1 2 true"),
    ('{{println "a" 1}}', "a 1\n"),
    ("{{print nil}} {{print .Nope}}", "<nil> <nil>"),
    ('{{html "<a href=\'x\'>&"}}', "&lt;a href=&#39;x&#39;&gt;&amp;"),
    ('{{urlquery "a b&c/d~"}}', "a+b%26c%2Fd~"),
    ('{{1 | printf "%d-%d" 2}}', "2-1"),
    ('{{"abc" | printf "%s" | upper}}', "ABC"),
]


@pytest.mark.parametrize(("template", "expected"), GO_FUNCTIONS)
def test_go_functions(template: str, expected: str) -> None:
    assert run(template, DOC) == expected


# -- printf: Go's fmt verbs ---------------------------------------------------------------------------------------

PRINTF = [
    ('"%s|%v" "ab" "ab"', "ab|ab"),
    ('"%.3s|%.0s|%.s|" "abcdef" "abc" "abc"', "abc|||"),
    ('"%-10s|%10s|" "ab" "cd"', "ab        |        cd|"),
    ('"%5.1s|" "abc"', "    a|"),
    ('"%q %+q %#q" "a\\"b\\n" "é" "xy"', '"a\\"b\\n" "\\u00e9" `xy`'),
    ('"%d|%5d|%-5d|%05d|%+d|% d" 42 42 42 42 42 42', "42|   42|42   |00042|+42| 42"),
    ('"%x %X %#x %o %#o %O %b %08b" 255 255 255 8 8 8 5 5', "ff FF 0xff 10 010 0o10 101 00000101"),
    ('"%x|% x|%X" "hi" "hi" "hi"', "6869|68 69|6869"),
    ('"%c %U %q" 65 9731 65', "A U+2603 'A'"),
    ('"%f|%.2f|%8.3f|%08.3f|%.0f" 3.14159 3.14159 3.14159 3.14159 2.5', "3.141590|3.14|   3.142|0003.142|2"),
    ('"%e|%.2e|%E" 1234.5678 1234.5678 0.000012', "1.234568e+03|1.23e+03|1.200000E-05"),
    ('"%g|%g|%g|%.3g|%G" 1234.5 0.000012 1000000.0 3.14159 1e-7', "1234.5|1.2e-05|1e+06|3.14|1E-07"),
    ('"%v|%v|%6.2v|" 2.5 1e21 3.14159', "2.5|1e+21|   3.1|"),
    ('"%t %v %v" true false nil', "true false <nil>"),
    ('"%T %T %T %T" 1 1.5 "s" true', "int float64 string bool"),
    ('"%v %d %s" .Mounts .State.Pid .Args',
     "[map[Destination:/x Source:/a] map[Destination:/y Source:/b]] 42 [-c x y]"),
    ('"%5s|%-4d|" .Args (slice .Mounts 0 0)', "[   -c   x y]|[]|"),
    ('"%d%%" 50', "50%"),
    ('"%*d|%-*d|%.*f" 5 42 4 7 2 3.14159', "   42|7   |3.14"),
]


@pytest.mark.parametrize(("args", "expected"), PRINTF)
def test_printf_verbs(args: str, expected: str) -> None:
    assert run(f"{{{{printf {args}}}}}", DOC) == expected


PRINTF_MISFITS = [
    ('"%d" "abc"', "%!d(string=abc)"),
    ('"%s" 42', "%!s(int=42)"),
    ('"%d" 1.5', "%!d(float64=1.5)"),
    ('"%s" true', "%!s(bool=true)"),
    ('"%t" 1', "%!t(int=1)"),
    ('"%s" nil', "%!s(<nil>)"),
    ('"%s"', "%!s(MISSING)"),
    ('"%d %d" 1', "1 %!d(MISSING)"),
    ('"%s" 1 2', "%!s(int=1)%!(EXTRA int=2)"),
    ('"x" "y" nil', "x%!(EXTRA string=y, <nil>)"),
    ('"%z" 1', "%!z(int=1)"),
    ('"%"', "%!(NOVERB)"),
    ('"%s" (split "a" ",")', "[a]"),
    ('"%d" (split "a" ",")', "[%!d(string=a)]"),
]


@pytest.mark.parametrize(("args", "expected"), PRINTF_MISFITS)
def test_printf_misfits_print_as_go_prints_them(args: str, expected: str) -> None:
    assert run(f"{{{{printf {args}}}}}", DOC) == expected


def test_sprintf_and_go_str_directly() -> None:
    assert sprintf("%s=%d", "a", 1) == "a=1"
    assert go_str({"b": [1, None], "a": True}) == "map[a:true b:[1 <nil>]]"
    assert go_str(123456789.0) == "1.23456789e+08" and go_str(0.0001) == "0.0001" and go_str(-0.0) == "-0"
    assert go_str(float("inf")) == "+Inf" and go_str(float("nan")) == "NaN"


# -- the language -------------------------------------------------------------------------------------------------

LANGUAGE = [
    ("{{.Name}} {{.State.Pid}} {{.Config.Cmd}} {{.Nope}} {{.Nope.Deeper}}", "/web 42 <no value> <no value> <no value>"),
    ("{{printf \"%v\" .Config.Cmd}} {{.Config.Env}} {{print .Config.Cmd}}", "<nil> [A=1 B=2] <nil>"),
    ("{{.Args}} {{.Config.Labels}} {{.F}} {{.Big}}", "[-c x y] map[a:2 z:1] 2.5 1e+06"),
    ("{{.}}", None),
    ("{{range .Mounts}}{{.Source}} {{end}}", "/a /b "),
    ("{{range $i, $m := .Mounts}}{{if $i}},{{end}}{{$m.Destination}}{{end}}", "/x,/y"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", "a=2;z=1;"),
    ("{{range $p, $c := .Ports}}{{$p}} -> {{(index $c 0).HostPort}}{{end}}", "80/tcp -> 8080"),
    ("{{range .Config.Empty}}x{{else}}empty{{end}}", "empty"),
    ("{{range .Config.Cmd}}x{{else}}none{{end}}", "none"),
    ('{{range split "1 2 3 4 5" " "}}{{if eq . "2"}}{{continue}}{{end}}{{if eq . "4"}}{{break}}{{end}}{{.}}{{end}}',
     "13"),
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if .Config.Cmd}}cmd{{else if .Config.Env}}env{{else}}none{{end}}", "env"),
    ("{{with .State}}{{.Pid}}{{end}} {{with .Config.Cmd}}x{{else}}no cmd{{end}}", "42 no cmd"),
    ("{{$x := .Name}}{{with .State}}{{$x}}:{{.Pid}}:{{$.Name}}{{end}}", "/web:42:/web"),
    ("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", "2"),
    ("{{with $s := .State}}{{$s.Pid}}{{end}}", "42"),
    ("a  {{- .Name -}}  b {{- /* a comment */ -}} c", "a/webbc"),
    ('{{"}}"}} {{`raw\\n`}} {{"\\t|\\x41|\\u00e9"}}', "}} raw\\n \t|A|é"),
    ("{{'a'}} {{0x1F}} {{1e3}} {{-2}} {{1_000}} {{true}} {{1.5}}", "97 31 1000 -2 1000 true 1.5"),
    ("{{ .Name }}{{ if .State.Running }}!{{ end }}", "/web!"),
    ("no actions at all", "no actions at all"),
    ("{{.Name}}\n{{.State.Pid}}", "/web\n42"),
]


@pytest.mark.parametrize(("template", "expected"), LANGUAGE)
def test_language(template: str, expected: str | None) -> None:
    result = run(template, DOC)
    if expected is None:  # the whole document: Go's map printing, keys sorted
        assert result.startswith("map[Args:[-c x y] Big:1e+06 Config:map[Cmd:<nil> Empty:[] Env:[A=1 B=2]")
    else:
        assert result == expected


def test_render_reads_dockers_escapes() -> None:
    """Docker's CLI turns a typed backslash-t and backslash-n into a tab and a newline before parsing."""
    assert render(r"{{.Name}}\t{{.State.Pid}}\n", DOC) == "/web\t42\n"


def test_header_functions_leave_titles_as_they_are() -> None:
    """Docker's HeaderFunctions: upper, lower, json... print a column's title as it is; printf is Go's."""
    template = Template('{{upper .Names}}\t{{printf "%.3s" .Names}}\t{{truncate .ID 3}}\t{{json .ID}}')
    assert template.render({"Names": "NAMES", "ID": "CONTAINER ID"}, HEADER_FUNCS) == \
        "NAMES\tNAM\tCONTAINER ID\tCONTAINER ID"


# -- errors: one line, Go's words, a usage error ------------------------------------------------------------------

ERRORS = [
    ("{{.Name", "template parsing error: template: :1: unclosed action"),
    ('{{"abc}}', "template parsing error: template: :1: unterminated quoted string"),
    ("{{nosuch .Name}}", 'template parsing error: template: :1: function "nosuch" not defined'),
    ("{{$x}}", 'template parsing error: template: :1: undefined variable "$x"'),
    ("{{(1}}", "template parsing error: template: :1: unclosed left paren"),
    ("{{1)}}", 'template parsing error: template: :1: unexpected ")" in command'),
    ("{{end}}", "template parsing error: template: :1: unexpected {{end}}"),
    ("{{else}}", "template parsing error: template: :1: unexpected {{else}}"),
    ("{{if 1}}x", "template parsing error: template: :1: unexpected EOF"),
    ("{{range .Args}}", "template parsing error: template: :1: unexpected EOF"),
    ("{{if}}x{{end}}", "template parsing error: template: :1: missing value for if"),
    ("{{}}", "template parsing error: template: :1: missing value for command"),
    ("{{break}}", "template parsing error: template: :1: {{break}} outside {{range}}"),
    ("{{template \"x\"}}", "template parsing error: template: :1: {{template}} is not supported here"),  # refused
    ("a\n{{.Name}}\n{{.State.Pid.X}}", 'template: :3:8: executing "" at <.State.Pid.X>: can\'t evaluate field X'),
    ("{{.Config.Cmd.X}}", 'template: :1:9: executing "" at <.Config.Cmd.X>: nil pointer evaluating interface {}.X'),
    ('{{"a" 1}}', 'template: :1:2: executing "" at <"a">: can\'t give argument to non-function "a"'),
    ("{{.Name | .State}}", 'executing "" at <.State>: State is not a method but has arguments'),
    ("{{upper 1 2}}", 'template: :1:2: executing "" at <upper>: wrong number of args for upper: want 1 got 2'),
    ("{{printf}}", "wrong number of args for printf: want at least 1 got 0"),
    ('{{eq 1 "a"}}', 'executing "" at <eq 1 "a">: error calling eq: incompatible types for comparison'),
    ("{{eq 1 1.0}}", "error calling eq: incompatible types for comparison"),
    ("{{lt true false}}", "error calling lt: invalid type for comparison"),
    ("{{index .Args 5}}", "error calling index: index out of range: 5"),
    ("{{len 3}}", "error calling len: len of type int"),
    ("{{range .Name}}x{{end}}", 'executing "" at <.Name>: range can\'t iterate over /web'),
    ("{{nil}}", "nil is not a command"),
    ('{{truncate "x" "a"}}', "wrong type for value; expected int; got string"),  # Go: expected integer; found "a"
]


@pytest.mark.parametrize(("template", "words"), ERRORS)
def test_errors_are_one_line_usage_errors_in_gos_words(template: str, words: str) -> None:
    with pytest.raises(StrataError) as info:
        run(template, DOC)
    assert info.value.kind is Kind.USAGE
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_row_lacking_a_field_is_an_error_a_document_is_not() -> None:
    """Docker's listing rows are typed structs (a field they lack is an error); inspect's documents fall back to
    maps (``<no value>``)."""
    with pytest.raises(StrataError, match="can't evaluate field Nope"):
        Template("{{.Nope}}", strict=True).render(ROW)
    assert Template("{{.Nope}}").render(ROW) == "<no value>"


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(StrataError) as info:
        run("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}")
    with pytest.raises(StrataError) as info:
        run("{{if 1}}" * 5000 + "x" + "{{end}}" * 5000)
    assert info.value.kind is Kind.USAGE
    assert info.value.kind is Kind.USAGE


# -- moved from tests/test_ux_puller.py and tests/test_ux_runner.py (the two engines' tests, now of the one) -----


def test_templates_print_as_go_does() -> None:
    doc = {"Id": "sha256:ab", "RepoTags": ["a:1", "b:2"], "Size": 12,
           "Config": {"Env": ["A=1", "B=2"], "Cmd": None, "Labels": {"k": "v", "a": "b"}}}
    assert render("{{.Id}} {{.Size}}", doc) == "sha256:ab 12"
    assert render("{{.RepoTags}} {{.Config.Labels}} {{.Config.Cmd}}", doc) == "[a:1 b:2] map[a:b k:v] <no value>"
    assert render("{{json .Config.Env}}|{{.Config.Env | json}}", doc) == '["A=1","B=2"]|["A=1","B=2"]'
    assert render(r"{{range .Config.Env}}{{.}}\n{{end}}", doc) == "A=1\nB=2\n"
    assert render('{{index .Config.Labels "k"}} {{join .RepoTags ","}}', doc) == "v a:1,b:2"
    assert render("{{if .Config.Cmd}}cmd{{else}}none{{end}} {{.Nope}}", doc) == "none <no value>"
    assert render("{{with .Config}}{{len .Env}}{{end}} {{- \" x\"}}", doc) == "2 x"
    assert render('{{if eq .Id "x" "sha256:ab"}}one of{{end}} {{or .Config.Cmd .Size}}', doc) == "one of 12"
    # variables and parenthesised calls, which the puller's engine refused, are Go's and work now
    assert render("{{$x := .Id}}{{$x}}", doc) == "sha256:ab"
    assert render("{{if and .Size (gt .Size 10)}}big{{end}}", doc) == "big"
    for bad in ("{{.Id", "{{if .Id}}x", "{{nosuch .Id}}", "{{$x}}", "{{define \"t\"}}{{end}}"):
        with pytest.raises(StrataError) as info:
            render(bad, doc)
        assert info.value.kind is Kind.USAGE and "\n" not in str(info.value)


def test_templates_as_docker_reads_them() -> None:
    doc = {"Name": "/web", "State": {"Pid": 42, "Running": True}, "Mounts": [{"Source": "/a"}, {"Source": "/b"}],
           "Config": {"Labels": {"k": "v"}, "Cmd": None}, "Args": ["-c", "x y"]}
    cases = {"{{.State.Pid}}": "42", "{{json .State}}": '{"Pid":42,"Running":true}', "{{.Name}}": "/web",
             "{{range .Mounts}}{{.Source}} {{end}}": "/a /b ", '{{index .Config.Labels "k"}}': "v",
             "{{.Config.Cmd}}": "<no value>", "{{.Nope}}": "<no value>", "{{.Args}}": "[-c x y]",
             '{{join .Args ","}}': "-c,x y", "{{.Name | upper}}": "/WEB", "{{len .Mounts}}": "2",
             "{{if .State.Running}}up{{else}}down{{end}}": "up", "{{json .Config.Labels}}": '{"k":"v"}',
             "x\\ty": "x\ty"}
    for text, expected in cases.items():
        assert render(text, doc) == expected, text
    for bad in ("{{nosuch .X}}", "{{range .Mounts}}", "{{end}}"):
        with pytest.raises(StrataError) as e:
            render(bad, doc)
        assert e.value.kind == Kind.USAGE
