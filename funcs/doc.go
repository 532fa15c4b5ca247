// Package funcs is the registry of named Go functions a node can run for
// its callers, and the dispatcher that runs them when CALL messages arrive.
//
// Functions are registered with their argument and result types
// (Register[A, R]); arguments and results travel as CBOR. Each function has
// a policy: by default only the node's ancestors may call it. Errors travel
// back typed (*RemoteError) with the node, the function and the message.
// A CANCEL from the caller, or the caller's deadline passing, cancels the
// function's context.
package funcs
