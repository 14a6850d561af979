// Command helm-render is `helm template` and `helm lint` built from Helm v3.16's own template
// engine and chart handling (see README.md for what is ported and what differs), for machines
// where no helm binary can be installed.
//
//	helm-render template [NAME] CHART_DIR [flags]
//	helm-render lint CHART_DIR... [flags]
//
// Flags may come before, between or after the arguments, as with Helm's command line:
//
//	-n, --namespace NS        release namespace (default "default")
//	-f, --values FILE         values file; repeatable, and a comma separates several
//	--set K=V                 strvals syntax, repeatable; also --set-string, --set-file, --set-json
//	--kube-version VERSION    Kubernetes version for .Capabilities and the kubeVersion check
//	-a, --api-versions G/V    (template) add to .Capabilities.APIVersions; repeatable, comma-separated
//	--debug                   (template) print the manifests even when they do not parse
//	--strict                  (lint) fail on warnings too
//	--quiet                   (lint) print only warnings and errors
package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"strings"
)

const usage = `usage:
  helm-render template [NAME] CHART_DIR [--namespace NS] [--kube-version v1.31.0]
                       [--api-versions GROUP/VERSION[/KIND]]... [-f FILE]... [--set K=V]...
                       [--set-string K=V]... [--set-file K=PATH]... [--set-json K=JSON]... [--debug]
  helm-render lint CHART_DIR... [--namespace NS] [--kube-version v1.31.0] [-f FILE]... [--set K=V]...
                       [--set-string K=V]... [--set-file K=PATH]... [--set-json K=JSON]... [--strict] [--quiet]
`

// parsedArgs is a command line split into positional arguments and flag values.
type parsedArgs struct {
	positional []string
	strings    map[string]string
	lists      map[string][]string
	bools      map[string]bool
}

// flagKinds maps each flag's long name to its kind: "string", "slice" (repeatable, comma-split,
// like pflag's StringSlice), "array" (repeatable, kept whole, like StringArray) or "bool".
var flagKinds = map[string]string{
	"namespace":    "string",
	"kube-version": "string",
	"api-versions": "slice",
	"values":       "slice",
	"set":          "array",
	"set-string":   "array",
	"set-file":     "array",
	"set-json":     "array",
	"debug":        "bool",
	"strict":       "bool",
	"quiet":        "bool",
}

var shortFlags = map[string]string{"n": "namespace", "f": "values", "a": "api-versions"}

// parseArgs reads flags anywhere on the line, in --name=value, --name value, -x value and -xvalue
// forms; "--" ends the flags.
func parseArgs(args []string, allowed map[string]bool) (*parsedArgs, error) {
	p := &parsedArgs{strings: map[string]string{}, lists: map[string][]string{}, bools: map[string]bool{}}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			p.positional = append(p.positional, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			p.positional = append(p.positional, arg)
			continue
		}
		var name, value string
		hasValue := false
		if strings.HasPrefix(arg, "--") {
			name = arg[2:]
			if eq := strings.Index(name, "="); eq >= 0 {
				name, value, hasValue = name[:eq], name[eq+1:], true
			}
		} else {
			long, ok := shortFlags[arg[1:2]]
			if !ok {
				return nil, fmt.Errorf("unknown shorthand flag: %q in %s", arg[1:2], arg)
			}
			name = long
			if len(arg) > 2 {
				value, hasValue = strings.TrimPrefix(arg[2:], "="), true
			}
		}
		kind, known := flagKinds[name]
		if !known || !allowed[name] {
			return nil, fmt.Errorf("unknown flag: --%s", name)
		}
		if kind == "bool" {
			p.bools[name] = !hasValue || value == "true"
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("flag needs an argument: --%s", name)
			}
			i++
			value = args[i]
		}
		switch kind {
		case "string":
			p.strings[name] = value
		case "slice":
			p.lists[name] = append(p.lists[name], strings.Split(value, ",")...)
		case "array":
			p.lists[name] = append(p.lists[name], value)
		}
	}
	return p, nil
}

func (p *parsedArgs) valueOptions() valueOptions {
	return valueOptions{
		ValueFiles:   p.lists["values"],
		StringValues: p.lists["set-string"],
		Values:       p.lists["set"],
		FileValues:   p.lists["set-file"],
		JSONValues:   p.lists["set-json"],
	}
}

// namespace is settings.Namespace() without a kubeconfig: the flag, else "default".
func (p *parsedArgs) namespace() string {
	if ns := p.strings["namespace"]; ns != "" {
		return ns
	}
	return "default"
}

// kubeVersion parses --kube-version as cmd/helm/template.go does.
func (p *parsedArgs) kubeVersion() (*KubeVersion, error) {
	v, ok := p.strings["kube-version"]
	if !ok {
		return nil, nil
	}
	parsed, err := ParseKubeVersion(v)
	if err != nil {
		return nil, fmt.Errorf("invalid kube version '%s': %s", v, err)
	}
	return parsed, nil
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("no command given\n%s", usage)
	}
	common := map[string]bool{"namespace": true, "kube-version": true, "values": true, "set": true, "set-string": true, "set-file": true, "set-json": true}
	allowed := map[string]bool{}
	for name := range common {
		allowed[name] = true
	}
	switch args[0] {
	case "template":
		allowed["api-versions"], allowed["debug"] = true, true
		p, err := parseArgs(args[1:], allowed)
		if err != nil {
			return err
		}
		if len(p.positional) < 1 {
			return fmt.Errorf("\"helm-render template\" requires at least 1 argument\n%s", usage)
		}
		kv, err := p.kubeVersion()
		if err != nil {
			return err
		}
		return runTemplate(p.positional, templateOptions{
			namespace:   p.namespace(),
			kubeVersion: kv,
			apiVersions: p.lists["api-versions"],
			values:      p.valueOptions(),
			debug:       p.bools["debug"],
		}, stdout)
	case "lint":
		allowed["strict"], allowed["quiet"] = true, true
		p, err := parseArgs(args[1:], allowed)
		if err != nil {
			return err
		}
		paths := p.positional
		if len(paths) == 0 {
			paths = []string{"."}
		}
		kv, err := p.kubeVersion()
		if err != nil {
			return err
		}
		return runLint(paths, lintOptions{
			namespace:   p.namespace(),
			kubeVersion: kv,
			values:      p.valueOptions(),
			strict:      p.bools["strict"],
			quiet:       p.bools["quiet"],
		}, stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func main() {
	// Helm logs its warnings and lint-mode notes through the standard logger on stderr; keep
	// them there, without the date prefix (Helm prints a file:line prefix instead).
	log.SetFlags(0)
	log.SetOutput(os.Stderr)
	if err := run(os.Args[1:], os.Stdout); err != nil {
		// cobra prints a command's error this way before Helm exits 1.
		fmt.Fprintf(os.Stderr, "Error: %s\n", err)
		os.Exit(1)
	}
}
