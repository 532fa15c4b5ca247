// Package core_test benchmarks Arbor's routing core: links (yamux over
// pipes), the router and the RouteMonitor, against a raw pipe baseline.
//
// Every figure is reported, never asserted. Run them with
//
//	go test -run='^$' -bench=. -count=5 ./bench/core/
//
// and compare runs with benchstat. docs/BENCHMARKS.md records the figures
// measured on the reference machine and where the time goes.
package core_test
