package api

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var update = flag.Bool("update", false, "rewrite concord.txt from the source")

// maxCore bounds what package concurrency exports: what a user of the SDK
// touches, nothing its siblings alone need.
const maxCore = 41

func TestAPI(t *testing.T) {
	lines, err := apiLines("..")
	if err != nil {
		t.Fatal(err)
	}
	got := []byte(strings.Join(lines, "\n") + "\n")
	if *update {
		if err := os.WriteFile("concord.txt", got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile("concord.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the exported API differs from api/concord.txt:\n%s\nIf the change is meant, run: go test ./api -update", lineDiff(string(want), string(got)))
	}
	core := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "pkg concurrency, ") {
			core++
		}
	}
	if core > maxCore {
		t.Errorf("package concurrency exports %d identifiers, at most %d", core, maxCore)
	}
}

// apiLines lists the exported API of every public package under root.
func apiLines(root string) ([]string, error) {
	var lines []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if skipDir(rel, d.Name()) {
			return filepath.SkipDir
		}
		ls, err := pkgLines(path, filepath.ToSlash(rel))
		lines = append(lines, ls...)
		return err
	})
	sort.Strings(lines)
	return slices.Compact(lines), err
}

func skipDir(rel, name string) bool {
	if rel == "." {
		return false
	}
	top := strings.Split(filepath.ToSlash(rel), "/")[0]
	return strings.HasPrefix(name, ".") || name == "testdata" || name == "internal" ||
		top == "cmd" || top == "examples" || top == "api" || top == "scripts" || top == "docs"
}

// pkgLines lists one directory's exported declarations (tests aside).
func pkgLines(dir, rel string) ([]string, error) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var lines []string
	for name, p := range pkgs {
		if name == "main" {
			continue
		}
		pre := "pkg " + rel + ", "
		for _, f := range p.Files {
			for _, d := range f.Decls {
				lines = append(lines, declLines(fset, pre, d)...)
			}
		}
	}
	return lines, nil
}

func declLines(fset *token.FileSet, pre string, d ast.Decl) []string {
	switch d := d.(type) {
	case *ast.FuncDecl:
		if !d.Name.IsExported() || (d.Recv != nil && !recvExported(d.Recv)) {
			return nil
		}
		recv := ""
		if d.Recv != nil {
			recv = "method (" + node(fset, d.Recv.List[0].Type) + ") "
		} else {
			recv = "func "
		}
		return []string{pre + recv + d.Name.Name + strings.TrimPrefix(node(fset, d.Type), "func")}
	case *ast.GenDecl:
		var out []string
		for _, s := range d.Specs {
			out = append(out, specLines(fset, pre, d.Tok, s)...)
		}
		return out
	}
	return nil
}

func specLines(fset *token.FileSet, pre string, tok token.Token, s ast.Spec) []string {
	switch s := s.(type) {
	case *ast.ValueSpec:
		var out []string
		for _, n := range s.Names {
			if n.IsExported() {
				typ := ""
				if s.Type != nil {
					typ = " " + node(fset, s.Type)
				}
				out = append(out, pre+tok.String()+" "+n.Name+typ)
			}
		}
		return out
	case *ast.TypeSpec:
		if !s.Name.IsExported() {
			return nil
		}
		head := pre + "type " + s.Name.Name + typeParams(fset, s)
		switch t := s.Type.(type) {
		case *ast.StructType:
			out := []string{head + " struct"}
			for _, f := range t.Fields.List {
				for _, n := range f.Names {
					if n.IsExported() {
						out = append(out, head+" struct, "+n.Name+" "+node(fset, f.Type))
					}
				}
			}
			return out
		case *ast.InterfaceType:
			out := []string{head + " interface"}
			for _, m := range t.Methods.List {
				for _, n := range m.Names {
					if n.IsExported() {
						out = append(out, head+" interface, "+n.Name+strings.TrimPrefix(node(fset, m.Type), "func"))
					}
				}
			}
			return out
		}
		eq := " "
		if s.Assign.IsValid() {
			eq = " = "
		}
		return []string{head + eq + node(fset, s.Type)}
	}
	return nil
}

func typeParams(fset *token.FileSet, s *ast.TypeSpec) string {
	if s.TypeParams == nil {
		return ""
	}
	var ps []string
	for _, f := range s.TypeParams.List {
		var ns []string
		for _, n := range f.Names {
			ns = append(ns, n.Name)
		}
		ps = append(ps, strings.Join(ns, ", ")+" "+node(fset, f.Type))
	}
	return "[" + strings.Join(ps, ", ") + "]"
}

func recvExported(r *ast.FieldList) bool {
	t := r.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	switch x := t.(type) {
	case *ast.IndexExpr:
		t = x.X
	case *ast.IndexListExpr:
		t = x.X
	}
	id, ok := t.(*ast.Ident)
	return ok && id.IsExported()
}

func node(fset *token.FileSet, n any) string {
	var b bytes.Buffer
	_ = printer.Fprint(&b, fset, n)
	return strings.Join(strings.Fields(b.String()), " ")
}

// lineDiff shows the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}
