package guest

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// libDirs are where the dynamic loader looks without an ld.so.cache.
var libDirs = [...]string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// sharedLibs returns the ELF interpreter and every shared library bin needs,
// transitively, as the absolute paths the loader will open.
func sharedLibs(bin string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var walk func(path string, top bool) error
	walk = func(path string, top bool) error {
		f, err := elf.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if top {
			for _, p := range f.Progs {
				if p.Type != elf.PT_INTERP {
					continue
				}
				b := make([]byte, p.Filesz)
				if _, err := p.ReadAt(b, 0); err != nil {
					return fmt.Errorf("read interpreter: %w", err)
				}
				interp := strings.TrimRight(string(b), "\x00")
				if !seen[interp] {
					seen[interp] = true
					out = append(out, interp)
				}
			}
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			return err
		}
		for _, n := range needed {
			p, ok := findLib(n)
			if !ok {
				return fmt.Errorf("shared library %s not found in %s", n, strings.Join(libDirs[:], ", "))
			}
			if seen[p] {
				continue
			}
			seen[p] = true
			out = append(out, p)
			if err := walk(p, false); err != nil {
				return fmt.Errorf("%s: %w", n, err)
			}
		}
		return nil
	}
	return out, walk(bin, true)
}

func findLib(name string) (string, bool) {
	for _, d := range libDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, true
		}
	}
	return "", false
}

// moduleClosure returns the modules (paths relative to dir) that loading
// names needs, dependencies first, from dir/modules.dep. Names the kernel
// does not have as modules (built in, or absent) are skipped: built-in
// features need no loading, and the guest reports what is missing when it
// is used.
func moduleClosure(dir string, names []string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w (is the kernel's modules package installed?)", err)
	}
	defer f.Close()
	deps := map[string][]string{}
	byName := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		base := strings.TrimSuffix(filepath.Base(mod), ".ko")
		byName[strings.ReplaceAll(base, "-", "_")] = mod
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var out []string
	done := map[string]bool{}
	var load func(m string)
	load = func(m string) {
		if done[m] {
			return
		}
		done[m] = true
		for _, d := range deps[m] {
			load(d)
		}
		out = append(out, m)
	}
	for _, n := range names {
		if m, ok := byName[strings.ReplaceAll(n, "-", "_")]; ok {
			load(m)
		}
	}
	return out, nil
}
