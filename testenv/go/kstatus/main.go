// Command kstatus prints, for each Kubernetes object in a JSON array on stdin, the verdict
// of the kstatus library (sigs.k8s.io/cli-utils, what Flux reads health with), and the
// verdict of health-check CEL expressions evaluated as Flux's healthCheckExprs are: the
// object's top-level fields as variables, inProgress first, then failed, then current.
// A test tool of s3connect's test environment, pinned in this module.
//
// Input:  {"objects": [...], "exprs": {"<Kind>": {"inProgress": "...", "failed": "...", "current": "..."}}}
// Output: [{"kstatus": "Current", "message": "...", "cel": "InProgress"}, ...]
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/google/cel-go/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type exprs struct {
	InProgress string `json:"inProgress"`
	Failed     string `json:"failed"`
	Current    string `json:"current"`
}

type input struct {
	Objects []json.RawMessage `json:"objects"`
	Exprs   map[string]exprs  `json:"exprs"`
}

type verdict struct {
	Kstatus string `json:"kstatus"`
	Message string `json:"message"`
	Cel     string `json:"cel,omitempty"`
}

func eval(env *cel.Env, expr string, obj map[string]interface{}) (bool, error) {
	if expr == "" {
		return false, nil
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return false, iss.Err()
	}
	prg, err := env.Program(ast)
	if err != nil {
		return false, err
	}
	vars := map[string]interface{}{}
	for _, k := range []string{"apiVersion", "kind", "metadata", "spec", "status"} {
		if v, ok := obj[k]; ok {
			vars[k] = v
		} else {
			vars[k] = map[string]interface{}{}
		}
	}
	out, _, err := prg.Eval(vars)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("%q is not a bool", expr)
	}
	return b, nil
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "reading input:", err)
		os.Exit(2)
	}
	env, err := cel.NewEnv(
		cel.Variable("apiVersion", cel.DynType), cel.Variable("kind", cel.DynType),
		cel.Variable("metadata", cel.DynType), cel.Variable("spec", cel.DynType), cel.Variable("status", cel.DynType),
		cel.OptionalTypes(),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := []verdict{}
	for _, raw := range in.Objects {
		// As the API machinery decodes objects: integers stay integers.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			fmt.Fprintln(os.Stderr, "decoding an object:", err)
			os.Exit(2)
		}
		o := u.Object
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(1)
		}
		v := verdict{Kstatus: res.Status.String(), Message: res.Message}
		if e, ok := in.Exprs[fmt.Sprint(o["kind"])]; ok {
			v.Cel = "InProgress"
			for _, step := range []struct{ expr, verdict string }{{e.InProgress, "InProgress"}, {e.Failed, "Failed"}, {e.Current, "Current"}} {
				hit, err := eval(env, step.expr, o)
				if err != nil {
					fmt.Fprintln(os.Stderr, "cel:", err)
					os.Exit(1)
				}
				if hit {
					v.Cel = step.verdict
					break
				}
			}
		}
		out = append(out, v)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
