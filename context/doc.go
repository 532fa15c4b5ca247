// Package context is the handle a program holds for a remote node, after
// Mitogen's Context: calls, disconnect and shutdown. Import it as arborctx;
// its handle type is Remote so it never sits beside the standard library's
// context.Context under the same name.
//
//	import arborctx "github.com/arbor-project/arbor/context"
package context
