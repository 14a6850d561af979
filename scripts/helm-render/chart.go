// Chart loading, ported from helm.sh/helm/v3 v3.16.x:
//   - pkg/chart/chart.go and pkg/chart/metadata.go (Chart, Metadata, Maintainer, Validate)
//   - pkg/chart/loader/directory.go and load.go (LoadDir, LoadFiles)
//   - internal/ignore/rules.go (.helmignore)
//   - pkg/chartutil/chartfile.go (LoadChartfile) and validate_name.go (ValidateReleaseName)
//
// Copyright The Helm Authors; licensed under the Apache License, Version 2.0
// (http://www.apache.org/licenses/LICENSE-2.0). Changes from upstream: subcharts are refused instead
// of loaded (charts/ directories, `dependencies:` in Chart.yaml, requirements.yaml), packaged .tgz
// charts are not read, and internal/sympath's symlink-following walk is replaced by a plain walk
// that follows symlinks the same way (lexical order, links resolved with os.Stat).

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode"

	"github.com/Masterminds/semver/v3"
	"sigs.k8s.io/yaml"
)

// APIVersionV1 and APIVersionV2 are the two chart API versions.
const (
	APIVersionV1 = "v1"
	APIVersionV2 = "v2"
)

// chartFile is a file of a chart: a template or a file reachable through .Files.
type chartFile struct {
	Name string
	Data []byte
}

// Chart is a loaded chart. It has no Dependencies field: a chart with subcharts is refused when
// it is loaded.
type Chart struct {
	// Metadata is the contents of the Chartfile.
	Metadata *Metadata
	// Templates for this chart.
	Templates []*chartFile
	// Values are default config for this chart.
	Values map[string]interface{}
	// Schema is an optional JSON schema for imposing structure on Values
	Schema []byte
	// Files are miscellaneous files in a chart archive,
	// e.g. README, LICENSE, etc.
	Files []*chartFile
}

// Name returns the name of the chart.
func (ch *Chart) Name() string {
	if ch.Metadata == nil {
		return ""
	}
	return ch.Metadata.Name
}

// Maintainer describes a Chart maintainer.
type Maintainer struct {
	// Name is a user name or organization name
	Name string `json:"name,omitempty"`
	// Email is an optional email address to contact the named maintainer
	Email string `json:"email,omitempty"`
	// URL is an optional URL to an address for the named maintainer
	URL string `json:"url,omitempty"`
}

// Validate checks valid data and sanitizes string characters.
func (m *Maintainer) Validate() error {
	if m == nil {
		return validationError("maintainers must not contain empty or null nodes")
	}
	m.Name = sanitizeString(m.Name)
	m.Email = sanitizeString(m.Email)
	m.URL = sanitizeString(m.URL)
	return nil
}

// Metadata for a Chart file. This models the structure of a Chart.yaml file, with Helm's field
// names, which is what templates see as .Chart.
type Metadata struct {
	// The name of the chart. Required.
	Name string `json:"name,omitempty"`
	// The URL to a relevant project page, git repo, or contact person
	Home string `json:"home,omitempty"`
	// Source is the URL to the source code of this chart
	Sources []string `json:"sources,omitempty"`
	// A SemVer 2 conformant version string of the chart. Required.
	Version string `json:"version,omitempty"`
	// A one-sentence description of the chart
	Description string `json:"description,omitempty"`
	// A list of string keywords
	Keywords []string `json:"keywords,omitempty"`
	// A list of name and URL/email address combinations for the maintainer(s)
	Maintainers []*Maintainer `json:"maintainers,omitempty"`
	// The URL to an icon file.
	Icon string `json:"icon,omitempty"`
	// The API Version of this chart. Required.
	APIVersion string `json:"apiVersion,omitempty"`
	// The condition to check to enable chart
	Condition string `json:"condition,omitempty"`
	// The tags to check to enable chart
	Tags string `json:"tags,omitempty"`
	// The version of the application enclosed inside of this chart.
	AppVersion string `json:"appVersion,omitempty"`
	// Whether or not this chart is deprecated
	Deprecated bool `json:"deprecated,omitempty"`
	// Annotations are additional mappings uninterpreted by Helm,
	// made available for inspection by other applications.
	Annotations map[string]string `json:"annotations,omitempty"`
	// KubeVersion is a SemVer constraint specifying the version of Kubernetes required.
	KubeVersion string `json:"kubeVersion,omitempty"`
	// Dependencies are a list of dependencies for a chart. Upstream this is []*Dependency; here it
	// is only read to refuse charts that declare any.
	Dependencies []interface{} `json:"dependencies,omitempty"`
	// Specifies the chart type: application or library
	Type string `json:"type,omitempty"`
}

// validationError is Helm's chart.ValidationError.
type validationError string

func (v validationError) Error() string {
	return "validation: " + string(v)
}

// Validate checks the metadata for known issues and sanitizes string
// characters.
func (md *Metadata) Validate() error {
	if md == nil {
		return validationError("chart.metadata is required")
	}

	md.Name = sanitizeString(md.Name)
	md.Description = sanitizeString(md.Description)
	md.Home = sanitizeString(md.Home)
	md.Icon = sanitizeString(md.Icon)
	md.Condition = sanitizeString(md.Condition)
	md.Tags = sanitizeString(md.Tags)
	md.AppVersion = sanitizeString(md.AppVersion)
	md.KubeVersion = sanitizeString(md.KubeVersion)
	for i := range md.Sources {
		md.Sources[i] = sanitizeString(md.Sources[i])
	}
	for i := range md.Keywords {
		md.Keywords[i] = sanitizeString(md.Keywords[i])
	}

	if md.APIVersion == "" {
		return validationError("chart.metadata.apiVersion is required")
	}
	if md.Name == "" {
		return validationError("chart.metadata.name is required")
	}

	if md.Name != filepath.Base(md.Name) {
		return validationError(fmt.Sprintf("chart.metadata.name %q is invalid", md.Name))
	}

	if md.Version == "" {
		return validationError("chart.metadata.version is required")
	}
	if !isValidSemver(md.Version) {
		return validationError(fmt.Sprintf("chart.metadata.version %q is invalid", md.Version))
	}
	if !isValidChartType(md.Type) {
		return validationError("chart.metadata.type must be application or library")
	}

	for _, m := range md.Maintainers {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func isValidChartType(in string) bool {
	switch in {
	case "", "application", "library":
		return true
	}
	return false
}

func isValidSemver(v string) bool {
	_, err := semver.NewVersion(v)
	return err == nil
}

// sanitizeString normalize spaces and removes non-printable characters.
func sanitizeString(str string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return ' '
		}
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, str)
}

// errSubcharts is what every refusal of a chart with dependencies starts with.
const errSubcharts = "helm-render does not support subcharts"

var utf8bom = []byte{0xEF, 0xBB, 0xBF}

// LoadDir loads a chart from a directory, honouring its .helmignore.
func LoadDir(dir string) (*Chart, error) {
	topdir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}

	// Just used for errors.
	c := &Chart{}

	rules := emptyIgnoreRules()
	ifile := filepath.Join(topdir, helmIgnore)
	if _, err := os.Stat(ifile); err == nil {
		r, err := parseIgnoreFile(ifile)
		if err != nil {
			return c, err
		}
		rules = r
	}
	rules.AddDefaults()

	files := []*chartFile{}
	topdir += string(filepath.Separator)

	walk := func(name string, fi os.FileInfo, err error) error {
		n := strings.TrimPrefix(name, topdir)
		if n == "" {
			// No need to process top level. Avoid bug with helmignore .* matching
			// empty names. See issue 1779.
			return nil
		}

		// Normalize to / since it will also work on Windows
		n = filepath.ToSlash(n)

		if err != nil {
			return err
		}
		if fi.IsDir() {
			// Directory-based ignore rules should involve skipping the entire
			// contents of that directory.
			if rules.Ignore(n, fi) {
				return filepath.SkipDir
			}
			return nil
		}

		// If a .helmignore file matches, skip this file.
		if rules.Ignore(n, fi) {
			return nil
		}

		// Irregular files include devices, sockets, and other uses of files that
		// are not regular files. In Go they have a file mode type bit set.
		// See https://golang.org/pkg/os/#FileMode for examples.
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("cannot load irregular file %s as it has file mode type bits set", name)
		}

		data, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("error reading %s: %w", n, err)
		}

		data = bytes.TrimPrefix(data, utf8bom)

		files = append(files, &chartFile{Name: n, Data: data})
		return nil
	}
	if err = walkFollowingSymlinks(topdir, walk); err != nil {
		return c, err
	}

	return loadFiles(files)
}

// walkFollowingSymlinks walks the tree in lexical order like filepath.Walk, but, as Helm's
// internal/sympath.Walk does, follows symbolic links (to files and to directories).
func walkFollowingSymlinks(root string, walkFn filepath.WalkFunc) error {
	info, err := os.Stat(root)
	if err != nil {
		return walkFn(root, nil, err)
	}
	return symwalk(root, info, walkFn)
}

func symwalk(path string, info os.FileInfo, walkFn filepath.WalkFunc) error {
	if !info.IsDir() {
		return walkFn(path, info, nil)
	}
	if err := walkFn(path, info, nil); err != nil {
		if info.IsDir() && err == filepath.SkipDir {
			return nil
		}
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return walkFn(path, info, err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return walkFn(path, info, err)
	}
	sort.Strings(names)
	for _, name := range names {
		filename := filepath.Join(path, name)
		// os.Stat follows the link, so a linked directory is walked into and a linked file read.
		fileInfo, err := os.Stat(filename)
		if err != nil {
			if err := walkFn(filename, fileInfo, err); err != nil && err != filepath.SkipDir {
				return err
			}
			continue
		}
		if err := symwalk(filename, fileInfo, walkFn); err != nil {
			if !fileInfo.IsDir() || err != filepath.SkipDir {
				return err
			}
		}
	}
	return nil
}

// loadFiles builds a chart from its files, as Helm's loader.LoadFiles does, refusing subcharts.
func loadFiles(files []*chartFile) (*Chart, error) {
	c := new(Chart)

	// do not rely on assumed ordering of files in the chart and crash
	// if Chart.yaml was not coming early enough to initialize metadata
	for _, f := range files {
		if f.Name == "Chart.yaml" {
			if c.Metadata == nil {
				c.Metadata = new(Metadata)
			}
			if err := yaml.Unmarshal(f.Data, c.Metadata); err != nil {
				return c, fmt.Errorf("cannot load Chart.yaml: %w", err)
			}
			// NOTE(bacongobbler): while the chart specification says that APIVersion must be set,
			// Helm 2 accepted charts that did not provide an APIVersion in their chart metadata.
			// Because of that, if APIVersion is unset, we should assume we're loading a v1 chart.
			if c.Metadata.APIVersion == "" {
				c.Metadata.APIVersion = APIVersionV1
			}
		}
	}
	for _, f := range files {
		switch {
		case f.Name == "Chart.yaml":
			// already processed
			continue
		case f.Name == "Chart.lock":
			// Only describes dependencies, which are refused below.
			continue
		case f.Name == "values.yaml":
			c.Values = make(map[string]interface{})
			if err := yaml.Unmarshal(f.Data, &c.Values); err != nil {
				return c, fmt.Errorf("cannot load values.yaml: %w", err)
			}
		case f.Name == "values.schema.json":
			c.Schema = f.Data
		case f.Name == "requirements.yaml" || f.Name == "requirements.lock":
			return c, fmt.Errorf("%s: the chart has %s (apiVersion v1 dependencies)", errSubcharts, f.Name)
		case strings.HasPrefix(f.Name, "templates/"):
			c.Templates = append(c.Templates, &chartFile{Name: f.Name, Data: f.Data})
		case strings.HasPrefix(f.Name, "charts/"):
			// Provenance files of packaged subcharts are plain files in Helm too.
			if filepath.Ext(f.Name) == ".prov" {
				c.Files = append(c.Files, &chartFile{Name: f.Name, Data: f.Data})
				continue
			}
			return c, fmt.Errorf("%s: the chart has %s", errSubcharts, f.Name)
		default:
			c.Files = append(c.Files, &chartFile{Name: f.Name, Data: f.Data})
		}
	}

	if c.Metadata == nil {
		return c, errors.New("Chart.yaml file is missing")
	}

	if err := c.Metadata.Validate(); err != nil {
		return c, err
	}
	if len(c.Metadata.Dependencies) > 0 {
		return c, fmt.Errorf("%s: Chart.yaml declares %d dependencies", errSubcharts, len(c.Metadata.Dependencies))
	}

	return c, nil
}

// LoadChartfile loads a Chart.yaml file into a *Metadata.
func LoadChartfile(filename string) (*Metadata, error) {
	b, err := os.ReadFile(filename)
	if err != nil {
		return nil, err
	}
	y := new(Metadata)
	err = yaml.Unmarshal(b, y)
	return y, err
}

// helmIgnore default name of an ignorefile.
const helmIgnore = ".helmignore"

// ignoreRules is a collection of path matching rules.
type ignoreRules struct {
	patterns []*ignorePattern
}

// emptyIgnoreRules builds an empty ruleset.
func emptyIgnoreRules() *ignoreRules {
	return &ignoreRules{patterns: []*ignorePattern{}}
}

// AddDefaults adds default ignore patterns.
//
// Ignore all dotfiles in "templates/"
func (r *ignoreRules) AddDefaults() {
	_ = r.parseRule(`templates/.?*`)
}

// parseIgnoreFile parses a helmignore file and returns the *ignoreRules.
func parseIgnoreFile(file string) (*ignoreRules, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseIgnore(f)
}

// parseIgnore parses a rules file
func parseIgnore(file io.Reader) (*ignoreRules, error) {
	r := &ignoreRules{patterns: []*ignorePattern{}}

	s := bufio.NewScanner(file)
	currentLine := 0
	for s.Scan() {
		scannedBytes := s.Bytes()
		// We trim UTF8 BOM
		if currentLine == 0 {
			scannedBytes = bytes.TrimPrefix(scannedBytes, utf8bom)
		}
		line := string(scannedBytes)
		currentLine++

		if err := r.parseRule(line); err != nil {
			return r, err
		}
	}
	return r, s.Err()
}

// Ignore evaluates the file at the given path, and returns true if it should be ignored.
//
// Ignore evaluates path against the rules in order. Evaluation stops when a match
// is found. Matching a negative rule will stop evaluation.
func (r *ignoreRules) Ignore(path string, fi os.FileInfo) bool {
	// Don't match on empty dirs.
	if path == "" {
		return false
	}

	// Disallow ignoring the current working directory.
	// See issue:
	// 1776 (New York City) Hamilton: "Pardon me, are you Aaron Burr, sir?"
	if path == "." || path == "./" {
		return false
	}

	// Negative rules should only override positive ignore rules, rather
	// than exclude everything aside from the pattern (e.g. Chart.yaml).
	// See issue:
	// 3622 Whitelisting in .helmignore with '/*' returns "chart metadata (Chart.yaml) missing"
	positiveMatch := false
	negativeMatch := false

	for _, p := range r.patterns {
		// For negative rules, we need to continue for non-matches,
		// and record matches.
		if p.negate {
			if p.mustDir && !fi.IsDir() {
				continue
			}
			if !p.match(path, fi) {
				continue
			}
			negativeMatch = true
		}

		// If the rule is looking for directories, and this is not a directory,
		// skip it.
		if p.mustDir && !fi.IsDir() {
			continue
		}
		if p.match(path, fi) {
			positiveMatch = true
		}
	}

	return positiveMatch && !negativeMatch
}

// parseRule parses a rule string and creates a pattern, which is then stored in the Rules object.
func (r *ignoreRules) parseRule(rule string) error {
	rule = strings.TrimSpace(rule)

	// Ignore blank lines
	if rule == "" {
		return nil
	}
	// Comment
	if strings.HasPrefix(rule, "#") {
		return nil
	}

	// Fail any rules that contain **
	if strings.Contains(rule, "**") {
		return errors.New("double-star (**) syntax is not supported")
	}

	// Fail any patterns that can't compile. A non-empty string must be
	// given to Match() to avoid optimization that skips rule evaluation.
	if _, err := filepath.Match(rule, "abc"); err != nil {
		return err
	}

	p := &ignorePattern{raw: rule}

	// Negation is handled at a higher level, so strip the leading ! from the
	// string.
	if strings.HasPrefix(rule, "!") {
		p.negate = true
		rule = rule[1:]
	}

	// Directory verification is handled by a higher level, so the trailing /
	// is removed from the rule. That way, a directory named "foo" matches,
	// even if the supplied string does not contain a literal slash character.
	if strings.HasSuffix(rule, "/") {
		p.mustDir = true
		rule = strings.TrimSuffix(rule, "/")
	}

	if strings.HasPrefix(rule, "/") {
		// Require path matches the root path.
		p.match = func(n string, fi os.FileInfo) bool {
			rule = strings.TrimPrefix(rule, "/")
			ok, err := filepath.Match(rule, n)
			if err != nil {
				log.Printf("Failed to compile %q: %s", rule, err)
				return false
			}
			return ok
		}
	} else if strings.Contains(rule, "/") {
		// require structural match.
		p.match = func(n string, fi os.FileInfo) bool {
			ok, err := filepath.Match(rule, n)
			if err != nil {
				log.Printf("Failed to compile %q: %s", rule, err)
				return false
			}
			return ok
		}
	} else {
		p.match = func(n string, fi os.FileInfo) bool {
			// When there is no slash in the pattern, we evaluate ONLY the
			// filename.
			n = filepath.Base(n)
			ok, err := filepath.Match(rule, n)
			if err != nil {
				log.Printf("Failed to compile %q: %s", rule, err)
				return false
			}
			return ok
		}
	}

	r.patterns = append(r.patterns, p)
	return nil
}

// ignorePattern describes a pattern to be matched in a rule set.
type ignorePattern struct {
	// raw is the unparsed string, with nothing stripped.
	raw string
	// match is the matcher function.
	match func(name string, fi os.FileInfo) bool
	// negate indicates that the rule's outcome should be negated.
	negate bool
	// mustDir indicates that the matched file must be a directory.
	mustDir bool
}

// validReleaseName is Helm's chartutil validName: a DNS-1123 subdomain.
var validReleaseName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// maxReleaseNameLen is the maximum length of a release name.
const maxReleaseNameLen = 53

// ValidateReleaseName performs checks for an entry for a Helm release name
//
// For Helm to allow a name, it must be below a certain character count (53) and also match
// a regular expression.
func ValidateReleaseName(name string) error {
	// This case is preserved for backwards compatibility
	if name == "" {
		return errors.New("no name provided")
	}
	if len(name) > maxReleaseNameLen || !validReleaseName.MatchString(name) {
		return fmt.Errorf("invalid release name, must match regex %s and the length must not be longer than 53", validReleaseName.String())
	}
	return nil
}
