// Faithfulness tests for values.go, ported from helm.sh/helm/v3 v3.16.x pkg/chartutil/
// coalesce_test.go, capabilities_test.go and jsonschema_test.go, with Helm's expected values.
// Where an upstream test builds subcharts, the part that applies to one chart is ported and the
// adaptation is described above the test.
//
// Copyright The Helm Authors; licensed under the Apache License, Version 2.0.

package main

import (
	"bytes"
	"testing"
	"text/template"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ref: http://www.yaml.org/spec/1.2/spec.html#id2803362
var testCoalesceValuesYaml = []byte(`
top: yup
bottom: null
right: Null
left: NULL
front: ~
back: ""
nested:
  boat: null

global:
  name: Ishmael
  subject: Queequeg
  nested:
    boat: true
`)

func ttpl(tpl string, v map[string]interface{}) (string, error) {
	var b bytes.Buffer
	tt := template.Must(template.New("t").Parse(tpl))
	err := tt.Execute(&b, v)
	return b.String(), err
}

// upstream: TestCoalesceValues, root chart only: upstream's chart "moby" has subcharts "pequod"
// (with "ahab") and "spouter"; here "moby" alone, with the upstream values minus the subchart
// sections, and only the upstream expectations about the root's own keys.
func TestCoalesceValues(t *testing.T) {
	is := assert.New(t)

	c := &Chart{
		Metadata: &Metadata{Name: "moby"},
		Values: map[string]interface{}{
			"back":     "exists",
			"bottom":   "exists",
			"front":    "exists",
			"left":     "exists",
			"name":     "moby",
			"nested":   map[string]interface{}{"boat": true},
			"override": "bad",
			"right":    "exists",
			"scope":    "moby",
			"top":      "nope",
			"global": map[string]interface{}{
				"nested2": map[string]interface{}{"l0": "moby"},
			},
		},
	}

	vals, err := ReadValues(testCoalesceValuesYaml)
	require.NoError(t, err)

	// taking a copy of the values before passing it
	// to CoalesceValues as argument, so that we can
	// use it for asserting later
	valsCopy := make(Values, len(vals))
	for key, value := range vals {
		valsCopy[key] = value
	}

	v, err := CoalesceValues(c, vals)
	require.NoError(t, err)

	tests := []struct {
		tpl    string
		expect string
	}{
		{"{{.top}}", "yup"},
		{"{{.back}}", ""},
		{"{{.name}}", "moby"},
		{"{{.global.name}}", "Ishmael"},
		{"{{.global.subject}}", "Queequeg"},
		{"{{.global.harpooner}}", "<no value>"},
		{"{{.global.nested.boat}}", "true"},
		{"{{.global.nested2.l0}}", "moby"},
		{"{{.global.nested2.l1}}", "<no value>"},
		{"{{.global.nested2.l2}}", "<no value>"},
	}

	for _, tt := range tests {
		if o, err := ttpl(tt.tpl, v); err != nil || o != tt.expect {
			t.Errorf("Expected %q to expand to %q, got %q", tt.tpl, tt.expect, o)
		}
	}

	nullKeys := []string{"bottom", "right", "left", "front"}
	for _, nullKey := range nullKeys {
		_, ok := v[nullKey]
		assert.Falsef(t, ok, "Expected key %q to be removed, still present", nullKey)
	}

	_, ok := v["nested"].(map[string]interface{})["boat"]
	assert.False(t, ok, "Expected nested boat key to be removed, still present")

	// CoalesceValues should not mutate the passed arguments
	is.Equal(valsCopy, vals)
}

// upstream: TestCoalesceTables
func TestCoalesceTables(t *testing.T) {
	dst := map[string]interface{}{
		"name": "Ishmael",
		"address": map[string]interface{}{
			"street":  "123 Spouter Inn Ct.",
			"city":    "Nantucket",
			"country": nil,
		},
		"details": map[string]interface{}{
			"friends": []string{"Tashtego"},
		},
		"boat": "pequod",
		"hole": nil,
	}
	src := map[string]interface{}{
		"occupation": "whaler",
		"address": map[string]interface{}{
			"state":   "MA",
			"street":  "234 Spouter Inn Ct.",
			"country": "US",
		},
		"details": "empty",
		"boat": map[string]interface{}{
			"mast": true,
		},
		"hole": "black",
	}

	// What we expect is that anything in dst overrides anything in src, but that
	// otherwise the values are coalesced.
	CoalesceTables(dst, src)

	assert.Equal(t, "Ishmael", dst["name"], "Unexpected name: %s", dst["name"])
	assert.Equal(t, "whaler", dst["occupation"], "Unexpected occupation: %s", dst["occupation"])

	addr, ok := dst["address"].(map[string]interface{})
	require.True(t, ok, "Address went away.")
	assert.Equal(t, "123 Spouter Inn Ct.", addr["street"].(string), "Unexpected address: %v", addr["street"])
	assert.Equal(t, "Nantucket", addr["city"].(string), "Unexpected city: %v", addr["city"])
	assert.Equal(t, "MA", addr["state"].(string), "Unexpected state: %v", addr["state"])

	_, ok = addr["country"]
	assert.False(t, ok, "The country is not left out.")

	det, ok := dst["details"].(map[string]interface{})
	require.Truef(t, ok, "Details is the wrong type: %v", dst["details"])

	_, ok = det["friends"]
	assert.True(t, ok, "Could not find your friends. Maybe you don't have any. :-(")
	assert.Equal(t, "pequod", dst["boat"].(string), "Expected boat string, got %v", dst["boat"])

	_, ok = dst["hole"]
	assert.False(t, ok, "The hole still exists.")

	dst2 := map[string]interface{}{
		"name": "Ishmael",
		"address": map[string]interface{}{
			"street":  "123 Spouter Inn Ct.",
			"city":    "Nantucket",
			"country": "US",
		},
		"details": map[string]interface{}{
			"friends": []string{"Tashtego"},
		},
		"boat": "pequod",
		"hole": "black",
	}

	// What we expect is that anything in dst should have all values set,
	// this happens when the --reuse-values flag is set but the chart has no modifications yet
	CoalesceTables(dst2, nil)

	assert.Equal(t, "Ishmael", dst2["name"], "Unexpected name: %s", dst2["name"])

	addr2, ok := dst2["address"].(map[string]interface{})
	require.True(t, ok, "Address went away.")
	assert.Equal(t, "123 Spouter Inn Ct.", addr2["street"].(string), "Unexpected address: %v", addr2["street"])
	assert.Equal(t, "Nantucket", addr2["city"].(string), "Unexpected city: %v", addr2["city"])
	assert.Equal(t, "US", addr2["country"].(string), "Unexpected Country: %v", addr2["country"])

	det2, ok := dst2["details"].(map[string]interface{})
	require.Truef(t, ok, "Details is the wrong type: %v", dst2["details"])

	_, ok = det2["friends"]
	assert.True(t, ok, "Could not find your friends. Maybe you don't have any. :-(")
	assert.Equal(t, "pequod", dst2["boat"].(string), "Expected boat string, got %v", dst2["boat"])
	assert.Equal(t, "black", dst2["hole"].(string), "Expected hole string, got %v", dst2["boat"])
}

// upstream (capabilities_test.go): TestVersionSet
func TestVersionSet(t *testing.T) {
	vs := VersionSet{"v1", "apps/v1"}
	if d := len(vs); d != 2 {
		t.Errorf("Expected 2 versions, got %d", d)
	}

	if !vs.Has("apps/v1") {
		t.Error("Expected to find apps/v1")
	}

	if vs.Has("Spanish/inquisition") {
		t.Error("No one expects the Spanish/inquisition")
	}
}

// upstream (capabilities_test.go): TestDefaultVersionSet
func TestDefaultVersionSet(t *testing.T) {
	if !DefaultVersionSet.Has("v1") {
		t.Error("Expected core v1 version set")
	}
}

// upstream (capabilities_test.go): TestParseKubeVersion
func TestParseKubeVersion(t *testing.T) {
	kv, err := ParseKubeVersion("v1.16.0")
	if err != nil {
		t.Errorf("Expected v1.16.0 to parse successfully")
	}
	if kv.Version != "v1.16.0" {
		t.Errorf("Expected parsed KubeVersion.Version to be v1.16.0, got %q", kv.String())
	}
	if kv.Major != "1" {
		t.Errorf("Expected parsed KubeVersion.Major to be 1, got %q", kv.Major)
	}
	if kv.Minor != "16" {
		t.Errorf("Expected parsed KubeVersion.Minor to be 16, got %q", kv.Minor)
	}
}

const subchartSchema = `{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "title": "Values",
  "type": "object",
  "properties": {
    "age": {
      "description": "Age",
      "minimum": 0,
      "type": "integer"
    }
  },
  "required": [
    "age"
  ]
}
`

// upstream (jsonschema_test.go): TestValidateAgainstSchema, with the schema on the chart itself
// (upstream puts it on a subchart named "subchart" and passes that subchart's values).
func TestValidateAgainstSchema(t *testing.T) {
	chrt := &Chart{
		Metadata: &Metadata{
			Name: "subchart",
		},
		Schema: []byte(subchartSchema),
	}

	vals := map[string]interface{}{
		"age": 25,
	}

	if err := ValidateAgainstSchema(chrt, vals); err != nil {
		t.Errorf("Error validating Values against Schema: %s", err)
	}
}

// upstream (jsonschema_test.go): TestValidateAgainstSchemaNegative, adapted as above; the
// expected error text is upstream's.
func TestValidateAgainstSchemaNegative(t *testing.T) {
	chrt := &Chart{
		Metadata: &Metadata{
			Name: "subchart",
		},
		Schema: []byte(subchartSchema),
	}

	vals := map[string]interface{}{}

	var errString string
	if err := ValidateAgainstSchema(chrt, vals); err == nil {
		t.Fatalf("Expected an error, but got nil")
	} else {
		errString = err.Error()
	}

	expectedErrString := `subchart:
- (root): age is required
`
	if errString != expectedErrString {
		t.Errorf("Error string :\n`%s`\ndoes not match expected\n`%s`", errString, expectedErrString)
	}
}

// Not ported, and why:
//   - TestMergeValues, TestMergeTables: MergeValues/MergeTables (nulls kept) are used by
//     `helm upgrade --reuse-values`, not by `helm template`; they are not part of this renderer.
//   - TestCoalesceValuesWarnings, TestConcatPrefix, and the subchart halves of TestCoalesceValues:
//     they need subcharts (globals, nested charts), which this renderer refuses.
//   - TestDefaultCapabilities, TestDefaultCapabilitiesHelmVersion: upstream expects v1.20.0, the
//     default of a test build without the Makefile's LDFLAGS; Helm v3.16 release binaries report
//     the client-go version (v1.31.0), which is what this renderer reports.
//   - TestValidateAgainstSingleSchema, TestValidateAgainstInvalidSingleSchema,
//     TestValidateAgainstSingleSchemaNegative: their fixtures (pkg/chartutil/testdata/test-values*.)
//     could not be read from the stored upstream sources.
