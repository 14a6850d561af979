// `helm template`, ported from helm.sh/helm/v3 v3.16.x:
//   - cmd/helm/template.go (printing manifests, then hooks, and the error suffix)
//   - cmd/helm/install.go (runInstall: values, chart loading, checkIfInstallable, deprecation warning)
//   - pkg/action/install.go (RunWithContext in client-only mode: release name, capabilities,
//     render values, NameAndChart)
//   - pkg/action/action.go (renderResources: kubeVersion check, NOTES.txt, SortManifests, output)
//
// Copyright The Helm Authors; licensed under the Apache License, Version 2.0
// (http://www.apache.org/licenses/LICENSE-2.0). Changes from upstream: only what `helm template`
// does without --validate, --show-only, --output-dir, --include-crds, --post-renderer or
// --is-upgrade is kept.

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
)

// notesFileSuffix is the suffix of the NOTES.txt file, which is rendered but never printed.
const notesFileSuffix = "NOTES.txt"

// templateOptions are the `helm template` flags this renderer offers.
type templateOptions struct {
	namespace   string
	kubeVersion *KubeVersion
	apiVersions []string
	values      valueOptions
	debug       bool
}

// nameAndChart splits the arguments as action.Install.NameAndChart does for `helm template`,
// whose release name defaults to "release-name".
func nameAndChart(args []string) (string, string, error) {
	if len(args) > 2 {
		return args[0], args[1], fmt.Errorf("expected at most two arguments, unexpected arguments: %v", strings.Join(args[2:], ", "))
	}
	if len(args) == 2 {
		return args[0], args[1], nil
	}
	return "release-name", args[0], nil
}

// runTemplate renders the chart as `helm template` does and writes what it prints to out.
func runTemplate(args []string, o templateOptions, out io.Writer) error {
	releaseName, chartPath, err := nameAndChart(args)
	if err != nil {
		return err
	}
	manifest, hooks, err := installDryRun(releaseName, chartPath, o)
	if err != nil && !o.debug {
		if manifest != nil {
			return fmt.Errorf("%w\n\nUse --debug flag to render out invalid YAML", err)
		}
		return err
	}

	// We ignore a potential error here because, when the --debug flag was specified,
	// we always want to print the YAML, even if it is not valid. The error is still returned afterwards.
	if manifest != nil {
		var manifests bytes.Buffer
		fmt.Fprintln(&manifests, strings.TrimSpace(manifest.String()))
		for _, m := range hooks {
			fmt.Fprintf(&manifests, "---\n# Source: %s\n%s\n", m.Path, m.Manifest)
		}
		fmt.Fprintf(out, "%s", manifests.String())
	}
	return err
}

// installDryRun is runInstall plus Install.RunWithContext in client-only mode. A nil manifest
// buffer means that no release was created (Helm's rel == nil): the error then gets no
// "Use --debug" suffix.
func installDryRun(releaseName, chartPath string, o templateOptions) (*bytes.Buffer, []*Hook, error) {
	if _, err := os.Stat(chartPath); err != nil {
		return nil, nil, fmt.Errorf("path %q not found", chartPath)
	}

	vals, err := o.values.MergeValues()
	if err != nil {
		return nil, nil, err
	}

	chrt, err := LoadDir(chartPath)
	if err != nil {
		return nil, nil, err
	}

	if err := checkIfInstallable(chrt); err != nil {
		return nil, nil, err
	}

	if chrt.Metadata.Deprecated {
		fmt.Fprintf(os.Stderr, "WARNING: %s\n", "This chart is deprecated")
	}

	if err := ValidateReleaseName(releaseName); err != nil {
		return nil, nil, fmt.Errorf("release name %q: %w", releaseName, err)
	}

	// Add mock objects in here so it doesn't use Kube API server
	// NOTE(bacongobbler): used for `helm template`
	caps := DefaultCapabilities.Copy()
	if o.kubeVersion != nil {
		caps.KubeVersion = *o.kubeVersion
	}
	caps.APIVersions = append(append(VersionSet{}, caps.APIVersions...), o.apiVersions...)

	options := ReleaseOptions{
		Name:      releaseName,
		Namespace: o.namespace,
		Revision:  1,
		IsInstall: true,
		IsUpgrade: false,
	}

	valuesToRender, err := ToRenderValues(chrt, vals, options, caps)
	if err != nil {
		return nil, nil, err
	}

	hooks, manifestDoc, err := renderResources(chrt, valuesToRender, caps)
	return manifestDoc, hooks, err
}

// checkIfInstallable validates if a chart can be installed
//
// Application chart type is only installable
func checkIfInstallable(ch *Chart) error {
	switch ch.Metadata.Type {
	case "", "application":
		return nil
	}
	return fmt.Errorf("%s charts are not installable", ch.Metadata.Type)
}

// renderResources renders the templates and splits them into hooks and ordered manifests, as
// action.Configuration.renderResources does; the buffer holds the manifests as printed.
func renderResources(ch *Chart, values Values, caps *Capabilities) ([]*Hook, *bytes.Buffer, error) {
	hs := []*Hook{}
	b := bytes.NewBuffer(nil)

	if ch.Metadata.KubeVersion != "" {
		if !IsCompatibleRange(ch.Metadata.KubeVersion, caps.KubeVersion.String()) {
			return hs, b, fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", ch.Metadata.KubeVersion, caps.KubeVersion.String())
		}
	}

	var e Engine
	files, err := e.Render(ch, values)
	if err != nil {
		return hs, b, err
	}

	// NOTES.txt gets rendered like all the other files, but because it's not a hook nor a resource,
	// pull it out of here. `helm template` never prints it.
	for k := range files {
		if strings.HasSuffix(k, notesFileSuffix) {
			delete(files, k)
		}
	}

	// Sort hooks, manifests, and partials. Only hooks and manifests are returned,
	// as partials are not used after renderer.Render. Empty manifests are also
	// removed here.
	hs, manifests, err := SortManifests(files, InstallOrder)
	if err != nil {
		// By catching parse errors here, we can prevent bogus releases from going
		// to Kubernetes.
		//
		// We return the files as a big blob of data to help the user debug parser
		// errors.
		for name, content := range files {
			if strings.TrimSpace(content) == "" {
				continue
			}
			fmt.Fprintf(b, "---\n# Source: %s\n%s\n", name, content)
		}
		return hs, b, err
	}

	for _, m := range manifests {
		fmt.Fprintf(b, "---\n# Source: %s\n%s\n", m.Name, m.Content)
	}

	return hs, b, nil
}
