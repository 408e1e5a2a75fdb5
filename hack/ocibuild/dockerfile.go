package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode"
)

// instruction is one logical Dockerfile instruction: continuation lines are
// joined and comments inside them dropped, as BuildKit's parser does.
type instruction struct {
	Cmd     string // upper-case keyword, e.g. "COPY"
	Args    string // everything after the keyword, trimmed
	Line    int    // 1-based line the instruction starts on
	Heredoc bool   // the instruction carries a heredoc (its body is skipped)
}

// String renders the instruction the way it appears in image history.
func (in instruction) String() string {
	return strings.TrimSpace(in.Cmd + " " + in.Args)
}

// stage is one FROM block of a Dockerfile.
type stage struct {
	Index        int      // position in the Dockerfile, usable as --from=<index>
	Name         string   // lower-cased `AS` name ("" when unnamed); BuildKit matches names case-insensitively
	Base         string   // image after FROM
	BaseFlags    []string // FROM flags such as --platform=...
	Line         int      // line of the FROM instruction
	Instructions []instruction
}

// label names a stage in error messages.
func (s stage) label() string {
	if s.Name != "" {
		return fmt.Sprintf("%q", s.Name)
	}
	return fmt.Sprintf("#%d", s.Index)
}

// knownInstructions are all Dockerfile keywords; anything else is a parse
// error in every stage, as with docker build.
var knownInstructions = map[string]bool{
	"ADD": true, "ARG": true, "CMD": true, "COPY": true, "ENTRYPOINT": true,
	"ENV": true, "EXPOSE": true, "FROM": true, "HEALTHCHECK": true, "LABEL": true,
	"MAINTAINER": true, "ONBUILD": true, "RUN": true, "SHELL": true,
	"STOPSIGNAL": true, "USER": true, "VOLUME": true, "WORKDIR": true,
}

var (
	directiveRe = regexp.MustCompile(`^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`)
	stageNameRe = regexp.MustCompile(`^[a-z][a-z0-9-_.]*$`)
	// heredocRe finds `<<EOF`, `<<-EOF`, `<<"EOF"` but not the here-string `<<<`.
	heredocRe = regexp.MustCompile(`(?:^|[^<])<<(-?)["']?([A-Za-z_][A-Za-z0-9_]*)["']?`)
)

// parseDockerfile splits a Dockerfile into stages. Instructions are kept
// unevaluated; only FROM lines are interpreted here.
func parseDockerfile(r io.Reader) ([]stage, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)

	var (
		stages     []stage
		pending    strings.Builder
		inCont     bool
		startLine  int
		lineNo     int
		directives = true // parser directives are only recognised before anything else
		heredocs   []heredoc
		heredocAt  int
	)

	add := func(text string, line int) error {
		in, err := splitInstruction(text, line)
		if err != nil {
			return err
		}
		if (in.Cmd == "RUN" || in.Cmd == "COPY" || in.Cmd == "ADD") && !strings.HasPrefix(in.Args, "[") {
			heredocs = findHeredocs(in.Args)
			heredocAt = line
			in.Heredoc = len(heredocs) > 0
		}
		if in.Cmd == "FROM" {
			st, err := parseFrom(in, len(stages))
			if err != nil {
				return err
			}
			for _, prev := range stages {
				if st.Name != "" && prev.Name == st.Name {
					return fmt.Errorf("line %d: FROM: stage name %q already used on line %d", line, st.Name, prev.Line)
				}
			}
			stages = append(stages, st)
			return nil
		}
		if len(stages) == 0 {
			if in.Cmd != "ARG" { // global ARGs may precede the first FROM
				return fmt.Errorf("line %d: %s before the first FROM", line, in.Cmd)
			}
			return nil
		}
		cur := &stages[len(stages)-1]
		cur.Instructions = append(cur.Instructions, in)
		return nil
	}

	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if lineNo == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if len(heredocs) > 0 {
			// Heredoc bodies are opaque text, not instructions.
			h := heredocs[0]
			body := line
			if h.stripTabs {
				body = strings.TrimLeft(body, "\t")
			}
			if body == h.word {
				heredocs = heredocs[1:]
			}
			continue
		}
		if directives {
			if m := directiveRe.FindStringSubmatch(line); m != nil {
				if strings.EqualFold(m[1], "escape") && m[2] != `\` {
					return nil, fmt.Errorf("line %d: escape directive %q is not supported (only \\)", lineNo, m[2])
				}
				continue
			}
			directives = false
		}
		trimmed := strings.TrimSpace(line)
		// Comment and blank lines are dropped, also in the middle of a continuation.
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if !inCont {
			startLine = lineNo
		}
		right := strings.TrimRightFunc(line, unicode.IsSpace)
		if strings.HasSuffix(right, `\`) {
			pending.WriteString(right[:len(right)-1])
			inCont = true
			continue
		}
		pending.WriteString(line)
		inCont = false
		text := pending.String()
		pending.Reset()
		if err := add(text, startLine); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read Dockerfile: %w", err)
	}
	if inCont { // a trailing backslash on the last line is accepted by BuildKit
		if err := add(pending.String(), startLine); err != nil {
			return nil, err
		}
	}
	if len(heredocs) > 0 {
		return nil, fmt.Errorf("line %d: heredoc %q is not terminated", heredocAt, heredocs[0].word)
	}
	if len(stages) == 0 {
		return nil, errors.New("no FROM instruction")
	}
	return stages, nil
}

type heredoc struct {
	word      string
	stripTabs bool
}

func findHeredocs(args string) []heredoc {
	var hs []heredoc
	for _, m := range heredocRe.FindAllStringSubmatch(args, -1) {
		hs = append(hs, heredoc{word: m[2], stripTabs: m[1] == "-"})
	}
	return hs
}

func splitInstruction(text string, line int) (instruction, error) {
	text = strings.TrimSpace(text)
	kw, args := text, ""
	if i := strings.IndexFunc(text, unicode.IsSpace); i >= 0 {
		kw, args = text[:i], text[i+1:]
	}
	cmd := strings.ToUpper(kw)
	if !knownInstructions[cmd] {
		return instruction{}, fmt.Errorf("line %d: unknown instruction %q", line, kw)
	}
	return instruction{Cmd: cmd, Args: strings.TrimSpace(args), Line: line}, nil
}

// parseFrom reads `FROM [--flag=...] image [AS name]`.
func parseFrom(in instruction, index int) (stage, error) {
	flags, rest := cutFlags(in.Args)
	words := strings.Fields(rest)
	st := stage{Index: index, BaseFlags: flags, Line: in.Line}
	switch {
	case len(words) == 1:
	case len(words) == 3 && strings.EqualFold(words[1], "AS"):
		st.Name = strings.ToLower(words[2])
		if !stageNameRe.MatchString(st.Name) {
			return stage{}, fmt.Errorf("line %d: FROM: invalid stage name %q", in.Line, words[2])
		}
	default:
		return stage{}, fmt.Errorf("line %d: FROM: expected `FROM image [AS name]`, got %q", in.Line, in.Args)
	}
	st.Base = words[0]
	return st, nil
}

// cutFlags separates leading `--flag[=value]` words from the rest of the
// arguments, which are returned untouched (JSON forms keep their spacing).
func cutFlags(args string) (flags []string, rest string) {
	rest = strings.TrimSpace(args)
	for strings.HasPrefix(rest, "--") {
		flag, after := rest, ""
		if i := strings.IndexFunc(rest, unicode.IsSpace); i >= 0 {
			flag, after = rest[:i], rest[i+1:]
		}
		flags = append(flags, flag)
		rest = strings.TrimSpace(after)
	}
	return flags, rest
}

// parseExecForm parses the JSON array form of ENTRYPOINT, CMD and COPY; ok is
// false when args is not a JSON string array, i.e. Docker would take it as
// shell form.
func parseExecForm(args string) (list []string, ok bool) {
	if !strings.HasPrefix(args, "[") {
		return nil, false
	}
	if err := json.Unmarshal([]byte(args), &list); err != nil {
		return nil, false
	}
	if list == nil {
		list = []string{}
	}
	return list, true
}

// splitWords splits ENV/LABEL arguments into words the way Docker's shell
// lexer does (quotes and backslash escapes), refusing variable expansion,
// which this tool does not implement.
func splitWords(s string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
	)
	flush := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case ' ', '\t', '\n', '\r':
			flush()
		case '\\':
			if i+1 >= len(s) {
				return nil, errors.New("trailing backslash")
			}
			i++
			cur.WriteByte(s[i])
			inWord = true
		case '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				switch {
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"$\`, s[i+1]) >= 0:
					// Inside double quotes only \" \$ \\ are escapes; other backslashes stay.
					i++
				case s[i] == '$':
					return nil, errVariable
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
			inWord = true
		case '$':
			return nil, errVariable
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return words, nil
}

var errVariable = errors.New("variable expansion ($) is not supported")

// parseKeyValues parses `k=v k2="v 2"` (ENV and LABEL); the legacy
// `ENV key value` form is refused.
func parseKeyValues(args string) ([][2]string, error) {
	words, err := splitWords(args)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return nil, errors.New("expected key=value")
	}
	kvs := make([][2]string, 0, len(words))
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not key=value (the legacy `KEY value` form is not supported)", w)
		}
		if k == "" {
			return nil, fmt.Errorf("%q has an empty key", w)
		}
		kvs = append(kvs, [2]string{k, v})
	}
	return kvs, nil
}
