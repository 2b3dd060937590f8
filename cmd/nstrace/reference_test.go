package main

// The man page and the completions, generated from the flag definitions,
// checked by the programs that read them: groff, bash, zsh and fish.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// hostOnly skips a test of nothing kernel-specific in the VMs, whose image
// lacks what it drives (the host suite runs it; CI's host has it all).
func hostOnly(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("NSTRACE_TEST_VM") == "1" {
		t.Skipf("SKIPPED: runs in the host suite: the VM image has no %s", what)
	}
}

// reference runs realMain with args and returns what it printed.
func reference(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := realMain(args, &out, &errb); code != exitOK {
		t.Fatalf("nstrace %v: exit %d, stderr %q", args, code, errb.String())
	}
	return out.String()
}

func TestManPage(t *testing.T) {
	hostOnly(t, "groff, bash, zsh and fish")
	man := reference(t, "man")
	for _, f := range visibleFlags() {
		if !strings.Contains(man, `\fB\-\-`+roff(f.Name)+`\fR`) {
			t.Errorf("man page lacks --%s", f.Name)
		}
	}
	if strings.Contains(man, "table-size") {
		t.Errorf("man page shows the hidden --table-size")
	}
	needTools(t, "groff")
	// -ww: every warning; -z: no output, only the diagnostics.
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(man)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww on the man page: %v\n%s", err, out)
	}
	cmd = exec.Command("groff", "-man", "-Tutf8")
	cmd.Stdin = strings.NewReader(man)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("groff: %v", err)
	}
	// Rendered, the options read as a user types them.
	plain := string(bytes.ReplaceAll(out, []byte("\u2010"), []byte("-")))
	plain = stripOverstrike(plain)
	for _, want := range []string{"--metrics-addr", "-o, --output", "nstrace check"} {
		if !strings.Contains(plain, want) {
			t.Errorf("rendered man page lacks %q", want)
		}
	}
}

// stripOverstrike removes the backspace bold and underline of grotty.
func stripOverstrike(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i := 0; i < len(r); i++ {
		if i+1 < len(r) && r[i+1] == '\b' {
			i++
			continue
		}
		b.WriteRune(r[i])
	}
	return b.String()
}

func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// words splits a shell's completion output, one candidate per line or
// blank-separated, dropping fish's descriptions (after a tab).
func words(out string) []string {
	var w []string
	for _, l := range strings.Split(out, "\n") {
		l, _, _ = strings.Cut(l, "\t")
		w = append(w, strings.Fields(l)...)
	}
	return w
}

func TestCompletionBash(t *testing.T) {
	hostOnly(t, "groff, bash, zsh and fish")
	needTools(t, "bash")
	script := writeScript(t, "nstrace.bash", reference(t, "completion", "bash"))
	complete := func(line ...string) []string {
		t.Helper()
		// COMP_WORDS as bash splits the line, the cursor on its last word.
		arr := ""
		for _, w := range line {
			arr += " '" + w + "'"
		}
		cmd := exec.Command("bash", "--norc", "-c", `source "$1"; COMP_WORDS=(`+arr+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _nstrace; printf '%s\n' "${COMPREPLY[@]}"`, "bash", script)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %q: %v\n%s", line, err, out)
		}
		return words(string(out))
	}
	checkCompletion(t, "bash", complete)
}

func TestCompletionFish(t *testing.T) {
	hostOnly(t, "groff, bash, zsh and fish")
	needTools(t, "fish")
	script := writeScript(t, "nstrace.fish", reference(t, "completion", "fish"))
	complete := func(line ...string) []string {
		t.Helper()
		cmd := exec.Command("fish", "--no-config", "-c", `source $argv[1]; complete -C $argv[2]`, script, strings.Join(line, " "))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish completion of %q: %v\n%s", line, err, out)
		}
		return words(string(out))
	}
	checkCompletion(t, "fish", complete)
}

// checkCompletion asks complete for what follows the usual prefixes.
func checkCompletion(t *testing.T, shell string, complete func(line ...string) []string) {
	t.Helper()
	got := complete("nstrace", "--")
	for _, f := range visibleFlags() {
		if !slices.Contains(got, "--"+f.Name) {
			t.Errorf("%s: nstrace --<TAB> lacks --%s (got %v)", shell, f.Name, got)
		}
	}
	for flag, want := range map[string][]string{"--backend": flagValues["backend"], "--output": flagValues["output"], "--type": flagValues["type"]} {
		got := complete("nstrace", flag, "")
		if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
			t.Errorf("%s: nstrace %s <TAB> = %v, want %v", shell, flag, got, want)
		}
	}
	if got := complete("nstrace", "ch"); !slices.Equal(got, []string{"check"}) {
		t.Errorf("%s: nstrace ch<TAB> = %v, want [check]", shell, got)
	}
	if got := complete("nstrace", "completion", ""); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"bash", "fish", "zsh"}) {
		t.Errorf("%s: nstrace completion <TAB> = %v, want bash fish zsh", shell, got)
	}
}

func TestCompletionZsh(t *testing.T) {
	hostOnly(t, "groff, bash, zsh and fish")
	needTools(t, "zsh")
	text := reference(t, "completion", "zsh")
	script := writeScript(t, "_nstrace", text)
	if out, err := exec.Command("zsh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n on the completion: %v\n%s", err, out)
	}
	// Loaded as zsh loads it (compinit, from $fpath), its function is
	// defined for nstrace.
	cmd := exec.Command("zsh", "-f", "-c", `fpath=($1 $fpath); autoload -U compinit; compinit -u -D; print -r -- ${_comps[nstrace]}`, "zsh", filepath.Dir(script))
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "_nstrace" {
		t.Errorf("zsh compinit with the completion on $fpath: %v, _comps[nstrace] = %q", err, out)
	}
	for _, f := range visibleFlags() {
		if !strings.Contains(text, "--"+f.Name) {
			t.Errorf("zsh completion lacks --%s", f.Name)
		}
	}
}

func TestReferenceUsage(t *testing.T) {
	backendIndependent(t)
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"man", "extra"}} {
		var out, errb bytes.Buffer
		if code := realMain(args, &out, &errb); code != exitUsage || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("nstrace %v: exit %d, stderr %q; want %d and one line", args, code, errb.String(), exitUsage)
		}
	}
}
