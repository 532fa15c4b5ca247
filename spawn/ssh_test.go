package spawn

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseSSHTarget(t *testing.T) {
	cases := []struct {
		in   string
		want sshTarget
		bad  bool
	}{
		{in: "db1", want: sshTarget{host: "db1"}},
		{in: "alice@db1", want: sshTarget{user: "alice", host: "db1"}},
		{in: "alice@db1:2222", want: sshTarget{user: "alice", host: "db1", port: 2222}},
		{in: "[::1]:22", want: sshTarget{host: "::1", port: 22}},
		{in: "fe80::1", want: sshTarget{host: "fe80::1"}},
		{in: "a@b@db1", want: sshTarget{user: "a@b", host: "db1"}},
		{in: "-oProxyCommand=x", bad: true},
		{in: "db1:0", bad: true},
		{in: "db1:http", bad: true},
		{in: "@db1", bad: true},
		{in: "[::1", bad: true},
		{in: "db 1", bad: true},
	}
	for _, tc := range cases {
		got, err := parseSSHTarget(tc.in)
		if tc.bad != (err != nil) || !tc.bad && got != tc.want {
			t.Errorf("parseSSHTarget(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestSSHArgv(t *testing.T) {
	got, err := sshArgv("bob@db1:2200", SSHOptions{Path: "/opt/ssh", Options: []string{"ProxyJump=bastion"}, ConfigFile: "/etc/cfg"}, "CMD")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/opt/ssh", "-T", "-o", "BatchMode=yes",
		"-F", "/etc/cfg", "-o", "ProxyJump=bastion", "-p", "2200", "-l", "bob", "--", "db1", "CMD"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("argv %q\nwant %q", got, want)
	}
	if _, err := sshArgv("db1", SSHOptions{Options: []string{"-vvv"}}, "CMD"); err == nil {
		t.Fatal("option without = accepted")
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		method string
		code   int
		saw    bool
		stderr string
		want   error
	}{
		{"ssh", 255, false, "ssh: Could not resolve hostname x: Name or service not known", ErrNameNotResolved},
		{"ssh", 255, false, "ssh: connect to host 10.0.0.1 port 22: Connection refused", ErrUnreachable},
		{"ssh", 255, false, "ssh: connect to host 10.0.0.1 port 22: No route to host", ErrUnreachable},
		{"ssh", 255, false, "ssh: connect to host 10.0.0.1 port 22: Connection timed out", ErrConnectTimeout},
		{"ssh", 255, false, "bob@db1: Permission denied (publickey).", ErrAuthRefused},
		{"ssh", 255, false, "No ED25519 host key is known for db1 and you have requested strict checking.\nHost key verification failed.", ErrHostKey},
		{"ssh", 255, false, "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!\nHost key verification failed.", ErrHostKey},
		{"ssh", 127, false, "bash: line 1: /bin/sh: No such file or directory", ErrNoShell},
		{"ssh", 126, false, "bash: line 1: /bin/sh: Permission denied", ErrNoShell},
		{"ssh", 3, true, "boom", ErrBootstrap},
		{"sudo", 1, false, "sudo: a password is required", ErrSudoPassword},
		{"sudo", 1, false, "sudo: unknown user nosuch", ErrTargetNotFound},
		{"sudo", 1, true, "sudo: unknown user nosuch", ErrBootstrap},
	}
	for _, tc := range cases {
		if got, _ := classify(methods[tc.method], why{node: "n", code: tc.code, saw: tc.saw, stderr: tc.stderr}); !errors.Is(got, tc.want) {
			t.Errorf("classify(%s, %d, %q) = %v, want %v", tc.method, tc.code, tc.stderr, got, tc.want)
		}
	}
}
