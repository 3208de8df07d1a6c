package cli

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/alecthomas/kong"
)

// ReferenceFlag, as a program's only argument, makes Parse print the
// program's flags as Markdown instead of running it (see WriteReference).
// It is not in --help: it is for the generator of docs/configuration.md.
const ReferenceFlag = "--config-reference"

// RegenerateCommand rewrites docs/configuration.md from every program's
// ReferenceFlag output; CheckReference's error gives it.
const RegenerateCommand = "go run ./internal/cli/gendocs (or: make docs)"

// WriteReference writes app's flags as one Markdown section of
// docs/configuration.md, between <!-- BEGIN name --> and <!-- END name -->
// lines: the description, then a table per command and flag group of each
// flag, its variables (EnvPrefix first), its default and its help, all
// taken from the model kong shows in --help.
func WriteReference(w io.Writer, app *kong.Application, description string) error {
	var b bytes.Buffer
	name := app.Name
	fmt.Fprintf(&b, "<!-- BEGIN %s: generated from `%s %s` by %s; edit the flags' help, not this -->\n",
		name, name, ReferenceFlag, strings.SplitN(RegenerateCommand, " (", 2)[0])
	fmt.Fprintf(&b, "## `%s`\n\n%s\n", name, strings.TrimSpace(description))
	writeNode(&b, app.Node, name)
	fmt.Fprintf(&b, "<!-- END %s -->\n", name)
	_, err := w.Write(b.Bytes())
	return err
}

func writeNode(b *bytes.Buffer, node *kong.Node, path string) {
	if node.Type == kong.CommandNode {
		fmt.Fprintf(b, "\n### `%s`\n\n%s\n", path, cell(node.Help))
		if len(node.Flags) == 0 && len(node.Positional) == 0 {
			b.WriteString("\nNo flags of its own.\n")
		}
	}
	for _, arg := range node.Positional {
		fmt.Fprintf(b, "\nArgument `<%s>`: %s\n", arg.Name, cell(arg.Help))
	}
	// Flags in the order --help lists them: ungrouped first, then by group.
	groups := []string{""}
	byGroup := map[string][]*kong.Flag{}
	for _, f := range node.Flags {
		if f.Hidden || f.Name == "help" {
			continue
		}
		g := ""
		if f.Group != nil {
			g = f.Group.Title
		}
		if _, seen := byGroup[g]; !seen && g != "" {
			groups = append(groups, g)
		}
		byGroup[g] = append(byGroup[g], f)
	}
	for _, g := range groups {
		if len(byGroup[g]) == 0 {
			continue
		}
		if g != "" {
			fmt.Fprintf(b, "\n%s:\n", g)
		}
		b.WriteString("\n| flag | variables | default | meaning |\n|---|---|---|---|\n")
		for _, f := range byGroup[g] {
			fmt.Fprintf(b, "| %s | %s | %s | %s |\n", flagCell(f), envCell(f), defaultCell(f), cell(f.Help))
		}
	}
	for _, child := range node.Children {
		if child.Hidden {
			continue
		}
		writeNode(b, child, path+" "+child.Name)
	}
}

func flagCell(f *kong.Flag) string {
	name := "--" + f.Name
	if f.Tag.Negatable != "" {
		name = "--[no-]" + f.Name
	}
	if f.PlaceHolder != "" {
		name += "=" + f.FormatPlaceHolder()
	}
	s := code(name)
	if f.Short != 0 {
		s = code(fmt.Sprintf("-%c", f.Short)) + ", " + s
	}
	return s
}

func envCell(f *kong.Flag) string {
	names := Names(f.Envs)
	for i, n := range names {
		names[i] = code(n)
	}
	return strings.Join(names, ", ")
}

func defaultCell(f *kong.Flag) string {
	switch {
	case f.HasDefault && f.Default == "":
		return "(empty)"
	case f.HasDefault:
		return code(f.Default)
	case f.IsBool():
		return "`false`"
	}
	return ""
}

// cell makes text fit in one Markdown table cell, as text: <kind> would
// otherwise be taken for an HTML tag.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "<", `\<`, ">", `\>`).Replace(strings.Join(strings.Fields(s), " "))
}

// code is s as a code span in a table cell.
func code(s string) string {
	return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
}

// CheckReference compares the section of program in doc (the text of
// docs/configuration.md) with got, the program's ReferenceFlag output, and
// returns an error that shows the first difference and says how to
// regenerate the page, or nil when they agree.
func CheckReference(doc []byte, program string, got []byte) error {
	begin := []byte("<!-- BEGIN " + program + ":")
	end := []byte("<!-- END " + program + " -->\n")
	i := bytes.Index(doc, begin)
	j := bytes.Index(doc, end)
	if i < 0 || j < i {
		return fmt.Errorf("docs/configuration.md has no section for %s: regenerate it with %s", program, RegenerateCommand)
	}
	section := doc[i : j+len(end)]
	if bytes.Equal(section, got) {
		return nil
	}
	have, want := strings.Split(string(section), "\n"), strings.Split(string(got), "\n")
	line := 0
	for line < len(have) && line < len(want) && have[line] == want[line] {
		line++
	}
	at := func(lines []string) string {
		if line < len(lines) {
			return lines[line]
		}
		return "(end of section)"
	}
	return fmt.Errorf("docs/configuration.md disagrees with `%s %s` (its --help) at line %d of the %s section:\n"+
		"  docs: %s\n  help: %s\nThe flags' help is the source: regenerate the page with %s",
		program, ReferenceFlag, line+1, program, at(have), at(want), RegenerateCommand)
}
