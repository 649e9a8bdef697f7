package main

// Checks of the deployment files against the binary: template.yaml (SAM),
// the Makefile targets SAM runs, and the Dockerfile. `sam validate` and
// Docker are not available here, so the template is parsed with goformation
// and the Dockerfile as text.

import (
	"encoding/json"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/cloudformation/global"
	"github.com/awslabs/goformation/v7/cloudformation/serverless"
	"github.com/awslabs/goformation/v7/intrinsics"
	"github.com/urfave/cli/v2"
)

const (
	templatePath   = "../../template.yaml"
	makefilePath   = "../../Makefile"
	dockerfilePath = "../../Dockerfile"
)

// templateParams are what `sam deploy --guided` would ask for. List
// parameters have no usable default for goformation, so they are given.
var templateParams = map[string]any{
	"SubnetIds":         []any{"subnet-0a1b2c3d", "subnet-4e5f6a7b"},
	"SecurityGroupIds":  []any{"sg-0a1b2c3d"},
	"DatabaseUrlSecret": "aivonx/database-url",
	"RedisUrlSecret":    "aivonx/redis-url",
}

func parseTemplate(t *testing.T) *cloudformation.Template {
	t.Helper()
	b, err := os.ReadFile(templatePath)
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := goformation.ParseYAMLWithOptions(b, &intrinsics.ProcessorOptions{ParameterOverrides: templateParams})
	if err != nil {
		t.Fatalf("parse template.yaml: %v", err)
	}
	return tpl
}

// effective returns fn with the Globals.Function properties SAM would merge
// in (goformation parses Globals but does not apply them): scalars and lists
// from Globals when the function sets none, environment maps merged with
// the function's values winning.
func effective(t *testing.T, tpl *cloudformation.Template, fn *serverless.Function) serverless.Function {
	t.Helper()
	out := *fn
	g, _ := tpl.Globals["Function"].(*global.Function)
	if g == nil {
		return out
	}
	if out.Runtime == nil {
		out.Runtime = g.Runtime
	}
	if out.Handler == nil {
		out.Handler = g.Handler
	}
	if out.Architectures == nil && g.Architectures != nil {
		out.Architectures = *g.Architectures
	}
	if out.MemorySize == nil {
		out.MemorySize = g.MemorySize
	}
	if out.Timeout == nil {
		out.Timeout = g.Timeout
	}
	if out.VpcConfig == nil {
		out.VpcConfig = g.VpcConfig
	}
	env := map[string]string{}
	if g.Environment != nil {
		maps.Copy(env, g.Environment.Variables)
	}
	if fn.Environment != nil {
		maps.Copy(env, fn.Environment.Variables)
	}
	out.Environment = &serverless.Function_FunctionEnvironment{Variables: env}
	return out
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func num(p *int) int {
	if p == nil {
		return -1
	}
	return *p
}

func TestTemplate(t *testing.T) {
	tpl := parseTemplate(t)
	if tpl.Transform == nil || tpl.Transform.String == nil || *tpl.Transform.String != "AWS::Serverless-2016-10-31" {
		t.Fatalf("Transform %+v", tpl.Transform)
	}
	fns := tpl.GetAllServerlessFunctionResources()
	if got := slices.Sorted(maps.Keys(fns)); !reflect.DeepEqual(got, []string{"MigrateFunction", "ProxyFunction", "WorkerFunction"}) {
		t.Fatalf("functions %v", got)
	}

	// Shared by the three: the same binary, built by the Makefile.
	for name, fn := range fns {
		f := effective(t, tpl, fn)
		if str(f.Runtime) != "provided.al2023" || str(f.Handler) != "bootstrap" ||
			!reflect.DeepEqual(f.Architectures, []string{"arm64"}) || f.PackageType != nil {
			t.Errorf("%s: runtime %s handler %s architectures %v package %s", name, str(f.Runtime), str(f.Handler), f.Architectures, str(f.PackageType))
		}
		if bm := fn.AWSCloudFormationMetadata["BuildMethod"]; bm != "makefile" {
			t.Errorf("%s: Metadata.BuildMethod %v, want makefile", name, bm)
		}
		if fn.CodeUri == nil || fn.CodeUri.String == nil || *fn.CodeUri.String != "." {
			t.Errorf("%s: CodeUri %+v, want . (the module root, where the Makefile is)", name, fn.CodeUri)
		}
		if num(f.MemorySize) != 512 {
			t.Errorf("%s: MemorySize %d", name, num(f.MemorySize))
		}
		if f.VpcConfig == nil || !reflect.DeepEqual(f.VpcConfig.SubnetIds, []string{"subnet-0a1b2c3d", "subnet-4e5f6a7b"}) ||
			!reflect.DeepEqual(f.VpcConfig.SecurityGroupIds, []string{"sg-0a1b2c3d"}) {
			t.Errorf("%s: VpcConfig %+v", name, f.VpcConfig)
		}
		env := f.Environment.Variables
		// Secrets come from Secrets Manager at deploy time, never from a
		// plain-text parameter.
		if env["DATABASE_URL"] != "{{resolve:secretsmanager:aivonx/database-url}}" ||
			env["REDIS_URL"] != "{{resolve:secretsmanager:aivonx/redis-url}}" {
			t.Errorf("%s: DATABASE_URL %q REDIS_URL %q", name, env["DATABASE_URL"], env["REDIS_URL"])
		}
	}

	t.Run("ProxyFunction", func(t *testing.T) {
		fn := effective(t, tpl, fns["ProxyFunction"])
		if num(fn.Timeout) != 900 {
			t.Errorf("Timeout %d, want 900 (long streams)", num(fn.Timeout))
		}
		u := fn.FunctionUrlConfig
		if u == nil || u.AuthType != "AWS_IAM" || str(u.InvokeMode) != "RESPONSE_STREAM" {
			t.Fatalf("FunctionUrlConfig %+v (InvokeMode %s)", u, str(u.InvokeMode))
		}
		wantEnv := []string{"AIVONX_HEALTH_INTERVAL", "AIVONX_LAMBDA_FRONT", "AIVONX_LAMBDA_ROLE", "AIVONX_LOG_LEVEL", "AIVONX_NODES", "AIVONX_SECRET_KEY", "DATABASE_URL", "REDIS_URL"}
		if got := slices.Sorted(maps.Keys(fn.Environment.Variables)); !reflect.DeepEqual(got, wantEnv) {
			t.Errorf("environment %v, want %v", got, wantEnv)
		}
		env := fn.Environment.Variables
		if env["AIVONX_LAMBDA_ROLE"] != "serve" || env["AIVONX_LAMBDA_FRONT"] != "function-url" || env["AIVONX_HEALTH_INTERVAL"] != "1m" {
			t.Errorf("environment %v", env)
		}
		if len(fn.Events) != 0 || fn.ReservedConcurrentExecutions != nil {
			t.Errorf("events %v reserved %d", fn.Events, num(fn.ReservedConcurrentExecutions))
		}
	})

	t.Run("WorkerFunction", func(t *testing.T) {
		fn := effective(t, tpl, fns["WorkerFunction"])
		ev, ok := fn.Events["HealthCheck"]
		if !ok || ev.Type != "Schedule" || ev.Properties == nil || ev.Properties.ScheduleEvent == nil {
			t.Fatalf("HealthCheck event %+v", ev)
		}
		s := ev.Properties.ScheduleEvent
		if s.Schedule != "rate(1 minute)" || s.Enabled == nil || !*s.Enabled {
			t.Errorf("schedule %q enabled %v", s.Schedule, s.Enabled)
		}
		if len(fn.Events) != 1 {
			t.Errorf("events %v", slices.Collect(maps.Keys(fn.Events)))
		}
		if num(fn.ReservedConcurrentExecutions) != 1 {
			t.Errorf("ReservedConcurrentExecutions %d", num(fn.ReservedConcurrentExecutions))
		}
		if c := fn.EventInvokeConfig; c == nil || num(c.MaximumRetryAttempts) != 0 || num(c.MaximumEventAgeInSeconds) != 60 {
			t.Errorf("EventInvokeConfig %+v", c)
		}
		// A pass must end before the next one starts.
		if to := num(fn.Timeout); to <= 0 || to >= 60 {
			t.Errorf("Timeout %d, want under the 60 s period", to)
		}
		wantEnv := []string{"AIVONX_HEALTH_INTERVAL", "AIVONX_LAMBDA_ROLE", "AIVONX_LOG_LEVEL", "DATABASE_URL", "REDIS_URL"}
		if got := slices.Sorted(maps.Keys(fn.Environment.Variables)); !reflect.DeepEqual(got, wantEnv) {
			t.Errorf("environment %v, want %v", got, wantEnv)
		}
		if r := fn.Environment.Variables["AIVONX_LAMBDA_ROLE"]; r != "worker" {
			t.Errorf("AIVONX_LAMBDA_ROLE %q", r)
		}
		if fn.FunctionUrlConfig != nil {
			t.Error("the worker has a Function URL")
		}
	})

	t.Run("MigrateFunction", func(t *testing.T) {
		fn := effective(t, tpl, fns["MigrateFunction"])
		if r := fn.Environment.Variables["AIVONX_LAMBDA_ROLE"]; r != "migrate" {
			t.Errorf("AIVONX_LAMBDA_ROLE %q", r)
		}
		if len(fn.Events) != 0 || fn.FunctionUrlConfig != nil {
			t.Error("the migrate function must run only when invoked by hand")
		}
		if num(fn.ReservedConcurrentExecutions) != 1 || fn.EventInvokeConfig == nil || num(fn.EventInvokeConfig.MaximumRetryAttempts) != 0 {
			t.Errorf("reserved %d, EventInvokeConfig %+v", num(fn.ReservedConcurrentExecutions), fn.EventInvokeConfig)
		}
		if to := num(fn.Timeout); to < 60 || to > 900 {
			t.Errorf("Timeout %d", to)
		}
	})

	// Parameters and outputs as written (processing replaces defaults with
	// the overrides and resolves Fn::GetAtt to nil).
	raw := rawTemplate(t)
	t.Run("Parameters", func(t *testing.T) {
		params, _ := raw["Parameters"].(map[string]any)
		want := map[string]any{"Type": "String", "Default": "AWS_IAM", "AllowedValues": []any{"AWS_IAM", "NONE"}}
		auth, _ := params["UrlAuthType"].(map[string]any)
		delete(auth, "Description")
		if !reflect.DeepEqual(auth, want) {
			t.Errorf("UrlAuthType %v, want %v", auth, want)
		}
		for name, typ := range map[string]string{
			"DatabaseUrlSecret": "String", "RedisUrlSecret": "String",
			"SubnetIds": "List<AWS::EC2::Subnet::Id>", "SecurityGroupIds": "List<AWS::EC2::SecurityGroup::Id>",
		} {
			p, _ := params[name].(map[string]any)
			if _, hasDefault := p["Default"]; p == nil || p["Type"] != typ || hasDefault {
				t.Errorf("%s: %v, want a required %s", name, p, typ)
			}
		}
		// No default anywhere may carry a URL (with credentials, say).
		for name, p := range params {
			if d, ok := p.(map[string]any)["Default"].(string); ok && strings.Contains(d, "://") {
				t.Errorf("%s has a URL default %q", name, d)
			}
		}
	})

	t.Run("Outputs", func(t *testing.T) {
		outputs, _ := raw["Outputs"].(map[string]any)
		value := func(name string) any {
			o, _ := outputs[name].(map[string]any)
			return o["Value"]
		}
		// SAM names the URL resource <function>Url.
		got := value("FunctionUrl")
		if !reflect.DeepEqual(got, map[string]any{"Fn::GetAtt": "ProxyFunctionUrl.FunctionUrl"}) &&
			!reflect.DeepEqual(got, map[string]any{"Fn::GetAtt": []any{"ProxyFunctionUrl", "FunctionUrl"}}) {
			t.Errorf("FunctionUrl output %#v, want the GetAtt of ProxyFunctionUrl.FunctionUrl", got)
		}
		for _, name := range []string{"ProxyFunctionName", "WorkerFunctionName", "MigrateFunctionName"} {
			if got, want := value(name), map[string]any{"Ref": strings.TrimSuffix(name, "Name")}; !reflect.DeepEqual(got, want) {
				t.Errorf("%s output %#v, want %#v", name, got, want)
			}
		}
		if len(outputs) != 4 {
			t.Errorf("outputs %v", slices.Sorted(maps.Keys(outputs)))
		}
	})
}

// The UrlAuthType parameter really drives the URL's AuthType.
func TestTemplateAuthTypeNone(t *testing.T) {
	b, err := os.ReadFile(templatePath)
	if err != nil {
		t.Fatal(err)
	}
	params := maps.Clone(templateParams)
	params["UrlAuthType"] = "NONE"
	tpl, err := goformation.ParseYAMLWithOptions(b, &intrinsics.ProcessorOptions{ParameterOverrides: params})
	if err != nil {
		t.Fatal(err)
	}
	fn, err := tpl.GetServerlessFunctionWithName("ProxyFunction")
	if err != nil {
		t.Fatal(err)
	}
	if fn.FunctionUrlConfig.AuthType != "NONE" {
		t.Fatalf("AuthType %q", fn.FunctionUrlConfig.AuthType)
	}
}

// rawTemplate returns template.yaml as generic JSON, short-form tags
// (!Ref, !GetAtt) turned into their long forms, nothing resolved.
func rawTemplate(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(templatePath)
	if err != nil {
		t.Fatal(err)
	}
	j, err := intrinsics.ProcessYAML(b, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		t.Fatalf("read template.yaml: %v", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(j, &raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

// envVarsOf returns the environment variables that cmd's flags read.
func envVarsOf(cmd *cli.Command) map[string]bool {
	vars := map[string]bool{}
	for _, f := range cmd.Flags {
		if e, ok := f.(interface{ GetEnvVars() []string }); ok {
			for _, v := range e.GetEnvVars() {
				vars[v] = true
			}
		}
	}
	return vars
}

// The roles in the template run real commands, and every setting the
// template passes to serve and worker is an environment variable of theirs
// (a typo would be ignored silently in Lambda).
func TestTemplateMatchesCLI(t *testing.T) {
	tpl := parseTemplate(t)
	app := newCLI()
	for name, fn := range tpl.GetAllServerlessFunctionResources() {
		env := effective(t, tpl, fn).Environment.Variables
		role := env[envLambdaRole]
		args, ok := lambdaRoles[role]
		if !ok {
			t.Errorf("%s: unknown %s %q", name, envLambdaRole, role)
			continue
		}
		cmd := app.Command(args[0])
		for _, sub := range args[1:] {
			if cmd == nil {
				break
			}
			cmd = cmd.Command(sub)
		}
		if cmd == nil {
			t.Errorf("%s: role %s runs %q, which the CLI does not have", name, role, strings.Join(args, " "))
			continue
		}
		read := envVarsOf(cmd)
		for k := range env {
			switch {
			case k == envLambdaRole:
			case role == "migrate" && k != "DATABASE_URL":
				// Settings shared through Globals; migrate needs only the database.
			case !read[k]:
				t.Errorf("%s: %s=%q is not read by `aivonx %s`", name, k, env[k], strings.Join(args, " "))
			}
		}
		if front, ok := env["AIVONX_LAMBDA_FRONT"]; ok && front != "function-url" && front != "http-api" && front != "alb" {
			t.Errorf("%s: AIVONX_LAMBDA_FRONT %q", name, front)
		}
	}
}

// SAM's makefile build method runs `make build-<LogicalId>` with
// ARTIFACTS_DIR set; each target must leave a static arm64 bootstrap there.
func TestMakefileBuildsLambdaTargets(t *testing.T) {
	b, err := os.ReadFile(makefilePath)
	if err != nil {
		t.Fatal(err)
	}
	mk := strings.ReplaceAll(string(b), "\\\n", " ")
	tpl := parseTemplate(t)
	for name, fn := range tpl.GetAllServerlessFunctionResources() {
		if fn.AWSCloudFormationMetadata["BuildMethod"] != "makefile" {
			continue
		}
		recipe, ok := makeRecipe(mk, "build-"+name)
		if !ok {
			t.Errorf("Makefile has no target build-%s (sam build runs it)", name)
			continue
		}
		for _, want := range []string{"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0", "lambda.norpc", "$(ARTIFACTS_DIR)/bootstrap", "./cmd/aivonx"} {
			if !strings.Contains(recipe, want) {
				t.Errorf("build-%s: recipe lacks %s:\n%s", name, want, recipe)
			}
		}
	}
}

// makeRecipe returns the recipe of target, following one level of
// prerequisites (a target may depend on a shared one), with variables
// referenced as $(NAME) expanded once from simple assignments.
func makeRecipe(mk, target string) (string, bool) {
	vars := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^([A-Za-z_][A-Za-z0-9_]*)\s*[:?]?=\s*(.*)$`).FindAllStringSubmatch(mk, -1) {
		vars[m[1]] = m[2]
	}
	lines := strings.Split(mk, "\n")
	var find func(string, int) (string, bool)
	find = func(target string, depth int) (string, bool) {
		for i, l := range lines {
			if strings.HasPrefix(l, "\t") || !strings.Contains(l, ":") || strings.Contains(l, ":=") {
				continue
			}
			head, prereqs, _ := strings.Cut(l, ":")
			if !slices.Contains(strings.Fields(head), target) {
				continue
			}
			var sb strings.Builder
			for _, r := range lines[i+1:] {
				if !strings.HasPrefix(r, "\t") {
					break
				}
				sb.WriteString(r + "\n")
			}
			if depth < 2 {
				prereqs, _, _ = strings.Cut(prereqs, "##")
				for _, p := range strings.Fields(prereqs) {
					if s, ok := find(p, depth+1); ok {
						sb.WriteString(s)
					}
				}
			}
			recipe := sb.String()
			for k, v := range vars {
				if k != "ARTIFACTS_DIR" {
					recipe = strings.ReplaceAll(recipe, "$("+k+")", v)
				}
			}
			return recipe, true
		}
		return "", false
	}
	return find(target, 0)
}

// dockerStage is one FROM section of a Dockerfile.
type dockerStage struct {
	from         string // image
	name         string // AS name
	instructions [][2]string
}

// parseDockerfile splits a Dockerfile into stages of (INSTRUCTION, args),
// joining continuation lines and dropping comments.
func parseDockerfile(t *testing.T, text string) []dockerStage {
	t.Helper()
	text = strings.ReplaceAll(text, "\\\n", " ")
	var stages []dockerStage
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, args, _ := strings.Cut(line, " ")
		instr = strings.ToUpper(instr)
		args = strings.TrimSpace(args)
		if instr == "FROM" {
			f := strings.Fields(args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--") })
			s := dockerStage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if instr != "ARG" {
				t.Fatalf("Dockerfile: %s before FROM", instr)
			}
			continue
		}
		st := &stages[len(stages)-1]
		st.instructions = append(st.instructions, [2]string{instr, args})
	}
	return stages
}

// last returns the args of the stage's last instr, as Docker keeps it.
func (s dockerStage) last(instr string) (string, bool) {
	for i := len(s.instructions) - 1; i >= 0; i-- {
		if s.instructions[i][0] == instr {
			return s.instructions[i][1], true
		}
	}
	return "", false
}

func execForm(t *testing.T, what, args string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(args), &v); err != nil || len(v) == 0 {
		t.Fatalf("%s %s: want the exec (JSON) form: %v", what, args, err)
	}
	return v
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	stages := parseDockerfile(t, string(b))
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(stages))
	}

	build := stages[0]
	if !strings.HasPrefix(build.from, "golang:1.26") {
		t.Errorf("build stage FROM %s, want golang:1.26", build.from)
	}
	var goBuild string
	for _, in := range build.instructions {
		if in[0] == "RUN" && strings.Contains(in[1], "go build") {
			goBuild = in[1]
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-tags lambda.norpc", "./cmd/aivonx"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("go build lacks %s: %q", want, goBuild)
		}
	}

	final := stages[len(stages)-1]
	if final.from != "scratch" && !strings.HasPrefix(final.from, "gcr.io/distroless/") {
		t.Errorf("final stage FROM %s, want distroless or scratch", final.from)
	}
	user, hasUser := final.last("USER")
	user, _, _ = strings.Cut(user, ":")
	switch {
	case hasUser && (user == "root" || user == "0"):
		t.Errorf("USER %s", user)
	case !hasUser && !strings.HasSuffix(final.from, ":nonroot"):
		t.Errorf("no USER and base %s is not a nonroot image", final.from)
	}

	ep, ok := final.last("ENTRYPOINT")
	if !ok {
		t.Fatal("no ENTRYPOINT")
	}
	entry := execForm(t, "ENTRYPOINT", ep)
	if !reflect.DeepEqual(entry, []string{"/aivonx"}) {
		t.Errorf("ENTRYPOINT %v, want [/aivonx]", entry)
	}
	copied := false
	for _, in := range final.instructions {
		if in[0] == "COPY" && strings.Contains(in[1], "--from="+build.name) && strings.HasSuffix(in[1], " "+entry[0]) {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the final stage does not copy the built binary to %s", entry[0])
	}

	c, ok := final.last("CMD")
	if !ok {
		t.Fatal("no CMD")
	}
	cmd := execForm(t, "CMD", c)
	if newCLI().Command(cmd[0]) == nil {
		t.Errorf("CMD %v: the binary has no command %q", cmd, cmd[0])
	}
	if cmd[0] != "serve" {
		t.Errorf("CMD %v, want serve (the image serves by default)", cmd)
	}
	if _, ok := final.last("EXPOSE"); !ok {
		t.Error("no EXPOSE")
	}
}

func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	for _, want := range []string{".git", ".aws-sam", "bin", "data"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
	// The build needs the sources, go.mod and go.sum.
	for _, keep := range []string{"*.go", "go.mod", "go.sum", "app", "cmd", "migrations"} {
		if slices.Contains(lines, keep) {
			t.Errorf(".dockerignore drops %s", keep)
		}
	}
}
