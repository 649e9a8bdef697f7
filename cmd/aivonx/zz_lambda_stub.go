package main

import (
	"context"
	"errors"
	"net/http"
	"os"
)

// TEMPORARY: replaced by lambda.go.
func inLambda() bool { return os.Getenv("AWS_LAMBDA_RUNTIME_API") != "" }
func startLambda(ctx context.Context, h http.Handler, front string) error {
	return errors.New("lambda not built")
}
func startLambdaWorker(ctx context.Context, runOnce func(context.Context) error) error {
	return errors.New("lambda not built")
}
