// Command gitops-verdict prints how Argo CD and Flux judge the health of
// Kubernetes objects. It reads one object, or a List of objects, as JSON on
// standard input and writes one JSON line per object:
//
//	{"namespace":"...","name":"...",
//	 "argocd":{"status":"Healthy","message":"..."},
//	 "kstatus":{"status":"Current","message":"..."}}
//
// The Argo CD verdict comes from running the health script given by
// --health-lua in gopher-lua, the interpreter Argo CD embeds, with the same
// libraries Argo CD opens for health scripts. The Flux verdict comes from
// sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, the library Flux uses
// for health checks.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type line struct {
	Namespace string  `json:"namespace"`
	Name      string  `json:"name"`
	ArgoCD    verdict `json:"argocd"`
	Kstatus   verdict `json:"kstatus"`
}

func main() {
	healthLua := flag.String("health-lua", "", "path of the Argo CD health script (required)")
	flag.Parse()
	if *healthLua == "" {
		fail(errors.New("--health-lua is required"))
	}
	script, err := os.ReadFile(*healthLua)
	if err != nil {
		fail(err)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(fmt.Errorf("reading standard input: %w", err))
	}
	objects, err := decodeObjects(input)
	if err != nil {
		fail(err)
	}
	encoder := json.NewEncoder(os.Stdout)
	for _, object := range objects {
		u := &unstructured.Unstructured{Object: object}
		argo, err := argoHealth(string(script), object)
		if err != nil {
			fail(fmt.Errorf("%s/%s: health script: %w", u.GetNamespace(), u.GetName(), err))
		}
		result, err := status.Compute(u)
		if err != nil {
			fail(fmt.Errorf("%s/%s: kstatus: %w", u.GetNamespace(), u.GetName(), err))
		}
		out := line{
			Namespace: u.GetNamespace(),
			Name:      u.GetName(),
			ArgoCD:    argo,
			Kstatus:   verdict{Status: result.Status.String(), Message: result.Message},
		}
		if err := encoder.Encode(out); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "gitops-verdict: %v\n", err)
	os.Exit(1)
}

// decodeObjects returns the one object of input, or the items of a List.
// Whole numbers are decoded as int64, as the API machinery decodes them, so
// kstatus compares generations as it does on a live object.
func decodeObjects(input []byte) ([]map[string]any, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(input); err != nil {
		return nil, fmt.Errorf("standard input is not a Kubernetes object or List: %w", err)
	}
	if !u.IsList() {
		return []map[string]any{u.Object}, nil
	}
	list, err := u.ToList()
	if err != nil {
		return nil, err
	}
	objects := make([]map[string]any, 0, len(list.Items))
	for _, item := range list.Items {
		objects = append(objects, item.Object)
	}
	return objects, nil
}

// argoHealth runs a health script as Argo CD runs one from argocd-cm
// without useOpenLibs. The script gets a fresh state with only the package,
// base and table libraries, and the object in the global obj, and returns a
// table with status and message. Argo CD also opens a restricted os
// library, which this program leaves out, so a script that needs os fails
// here. Where Argo CD turns an unknown status into Unknown, this program
// fails, so that a typo in the script fails the tests.
func argoHealth(script string, object map[string]any) (verdict, error) {
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := state.CallByParam(lua.P{Fn: state.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return verdict{}, err
		}
	}
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoString(script); err != nil {
		return verdict{}, err
	}
	returned := state.Get(-1)
	table, ok := returned.(*lua.LTable)
	if !ok {
		return verdict{}, fmt.Errorf("the script returned %s, not a table", returned.Type())
	}
	result := verdict{
		Status:  lua.LVAsString(table.RawGetString("status")),
		Message: lua.LVAsString(table.RawGetString("message")),
	}
	switch result.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return result, nil
	default:
		return verdict{}, fmt.Errorf("the script returned status %q, which is not an Argo CD health status", result.Status)
	}
}

// toLua converts decoded JSON as Argo CD does: objects and arrays become
// tables (arrays indexed from 1), numbers become Lua numbers and JSON null
// becomes nil.
func toLua(state *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case map[string]any:
		table := state.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(state, item))
		}
		return table
	case []any:
		table := state.NewTable()
		for i, item := range v {
			table.RawSetInt(i+1, toLua(state, item))
		}
		return table
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	default:
		return lua.LString(fmt.Sprint(v))
	}
}
