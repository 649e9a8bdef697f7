package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	awslambda "github.com/aws/aws-lambda-go/lambda"

	"github.com/aivonx/aivonx/infra/lambda"
)

// Under AWS Lambda (zip or container image) the process is the runtime:
// AWS_LAMBDA_RUNTIME_API names the Runtime API, and AIVONX_LAMBDA_ROLE picks
// what the function does, because a zip function's bootstrap is started
// without arguments:
//
//	serve    the proxy (default); AIVONX_LAMBDA_FRONT picks the event source
//	worker   one health pass per invocation (the EventBridge schedule)
//	migrate  `migrate up` per invocation, invoked by hand after a deploy
//
// Build with -tags lambda.norpc: the go1.x RPC mode cannot stream.
const (
	envRuntimeAPI = "AWS_LAMBDA_RUNTIME_API"
	envLambdaRole = "AIVONX_LAMBDA_ROLE"
)

// lambdaRoles maps AIVONX_LAMBDA_ROLE to the command line it runs.
var lambdaRoles = map[string][]string{
	"serve":   {"serve"},
	"worker":  {"worker"},
	"migrate": {"migrate", "up"},
}

func inLambda() bool { return os.Getenv(envRuntimeAPI) != "" }

// lambdaArgs returns the command line main should run. Outside Lambda it is
// args. Under Lambda, AIVONX_LAMBDA_ROLE, when set, replaces the whole
// command line (the image's default CMD included: configuration comes from
// the environment there); unset, a bare bootstrap runs serve. An unknown
// role is passed through as the command, which the CLI then rejects.
func lambdaArgs(args []string) []string {
	if !inLambda() || len(args) == 0 {
		return args
	}
	role := os.Getenv(envLambdaRole)
	switch {
	case role != "":
		cmd, ok := lambdaRoles[role]
		if !ok {
			cmd = []string{role}
		}
		return append([]string{args[0]}, cmd...)
	case len(args) == 1:
		return []string{args[0], "serve"}
	}
	return args
}

// startLambda serves h to the Lambda Runtime API from front: "function-url"
// (or "", streaming; the URL needs InvokeMode RESPONSE_STREAM), "http-api"
// (API Gateway HTTP API, buffered) or "alb" (buffered). It returns when ctx
// ends, which under Lambda means SIGTERM at shutdown, so that the caller's
// deferred closes run; if the runtime loop fails, the process exits.
func startLambda(ctx context.Context, h http.Handler, front string) error {
	var start func(...awslambda.Option)
	switch front {
	case "", "function-url":
		start = func(o ...awslambda.Option) { awslambda.StartHandlerFunc(lambda.FunctionURL(h), o...) }
	case "http-api":
		start = func(o ...awslambda.Option) { awslambda.StartHandlerFunc(lambda.HTTPAPI(h), o...) }
	case "alb":
		start = func(o ...awslambda.Option) { awslambda.StartHandlerFunc(lambda.ALB(h), o...) }
	default:
		return fmt.Errorf("lambda front %q: want function-url, http-api or alb", front)
	}
	return runLambda(ctx, start)
}

// startLambdaWorker runs runOnce once per invocation, whatever the event
// (an EventBridge schedule, or a manual invoke with any payload), within
// the invocation's deadline. An error fails that invocation. It returns as
// [startLambda] does.
func startLambdaWorker(ctx context.Context, runOnce func(context.Context) error) error {
	return runLambda(ctx, func(o ...awslambda.Option) {
		awslambda.StartWithOptions(runOnce, o...)
	})
}

// runLambda starts the runtime loop, which never returns, and waits for
// ctx. WithEnableSIGTERM registers the internal extension through which
// Lambda sends SIGTERM before it stops the container; main's signal
// context turns that into the end of ctx.
func runLambda(ctx context.Context, start func(...awslambda.Option)) error {
	go start(awslambda.WithContext(ctx), awslambda.WithEnableSIGTERM())
	<-ctx.Done()
	return nil
}
