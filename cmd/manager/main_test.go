package main

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/rollkeeper/rollkeeper/internal/envflag"
)

// withDefaults fills in the flags a case does not set.
func withDefaults(c config) config {
	c.P2P, c.P2PPort, c.SeederDir = true, 6881, "/var/lib/rollkeeper-seeder"
	c.SeederMaxBytes = 20 << 30
	c.MetricsSecure = true
	return c
}

func TestFlagsFromEnvironment(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    config
		wantErr bool
	}{
		{
			name: "defaults",
			want: withDefaults(config{ZKRoot: "/rollkeeper", ZKSessionTimeout: 10 * time.Second, MetricsAddr: ":8080", ProbeAddr: ":8081"}),
		},
		{
			name: "environment",
			env: map[string]string{"ROLLKEEPER_ZK_SERVERS": "a:1,b:2", "ROLLKEEPER_ZK_SESSION_TIMEOUT": "4s",
				"ROLLKEEPER_LEADER_ELECT": "true", "ROLLKEEPER_METRICS_BIND_ADDRESS": "0"},
			want: withDefaults(config{ZKServers: "a:1,b:2", ZKRoot: "/rollkeeper", ZKSessionTimeout: 4 * time.Second, MetricsAddr: "0",
				ProbeAddr: ":8081", LeaderElect: true}),
		},
		{
			name: "command line wins",
			env:  map[string]string{"ROLLKEEPER_ZK_ROOT": "/env"},
			args: []string{"--zk-root=/flag"},
			want: withDefaults(config{ZKRoot: "/flag", ZKSessionTimeout: 10 * time.Second, MetricsAddr: ":8080", ProbeAddr: ":8081"}),
		},
		{name: "bad value", env: map[string]string{"ROLLKEEPER_ZK_SESSION_TIMEOUT": "soon"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			var c config
			bindFlags(fs, &c)
			err := envflag.Apply(fs, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.wantErr {
				if err == nil {
					t.Fatal("envflag.Apply() succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if c != tt.want {
				t.Fatalf("config = %+v, want %+v", c, tt.want)
			}
		})
	}
}

// The metrics are served over HTTPS behind the authentication and authorization filter unless
// --metrics-secure=false asks for plain HTTP by name.
func TestMetricsSecureByDefault(t *testing.T) {
	parse := func(args ...string) config {
		t.Helper()
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		var c config
		bindFlags(fs, &c)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := parse()
	o, err := c.metricsOptions()
	if err != nil {
		t.Fatal(err)
	}
	if !o.SecureServing || o.FilterProvider == nil || o.BindAddress != ":8080" || o.CertDir != "" {
		t.Fatalf("default metrics options %+v: want HTTPS with a generated certificate and the authn/authz filter", o)
	}
	c = parse("--metrics-cert-dir=/certs")
	if o, err = c.metricsOptions(); err != nil {
		t.Fatal(err)
	}
	if !o.SecureServing || o.FilterProvider == nil || o.CertDir != "/certs" || o.CertName != "tls.crt" || o.KeyName != "tls.key" {
		t.Fatalf("metrics options with a cert dir %+v", o)
	}
	c = parse("--metrics-secure=false")
	if o, err = c.metricsOptions(); err != nil {
		t.Fatal(err)
	}
	if o.SecureServing || o.FilterProvider != nil {
		t.Fatalf("--metrics-secure=false: %+v, want plain HTTP", o)
	}
	c = parse("--metrics-secure=false", "--metrics-cert-dir=/certs")
	if _, err = c.metricsOptions(); err == nil {
		t.Fatal("--metrics-cert-dir without --metrics-secure accepted")
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	bindFlags(fs, &config{})
	if u := fs.Lookup("metrics-secure").Usage; !strings.Contains(u, "INSECURE") {
		t.Errorf("--metrics-secure help does not say INSECURE: %q", u)
	}
}

func TestValidate(t *testing.T) {
	c := config{ZKRoot: "/rollkeeper", ZKSessionTimeout: time.Second}
	if _, _, _, err := c.validate(); err == nil {
		t.Fatal("validate() without servers succeeded")
	}
	c.ZKServers = "127.0.0.1:2181"
	c.ZKRoot = "relative"
	if _, _, _, err := c.validate(); err == nil {
		t.Fatal("validate() with a relative root succeeded")
	}
	c.ZKRoot = "/rk"
	// Secure by default: no credentials, no start, unless running open is asked for by name.
	_, _, _, err := c.validate()
	if err == nil || !strings.Contains(err.Error(), "--zk-auth-file") || !strings.Contains(err.Error(), "--insecure-allow-open-zookeeper") {
		t.Fatalf("validate() without credentials: %v; want a refusal naming --zk-auth-file and --insecure-allow-open-zookeeper", err)
	}
	c.InsecureOpenZooKeeper = true
	if _, _, _, err := c.validate(); err != nil {
		t.Fatalf("validate() open by choice: %v", err)
	}
	c.InsecureOpenZooKeeper = false
	c.ZKAuth = "nocolon"
	if _, _, _, err := c.validate(); err == nil {
		t.Fatal("validate() with malformed credentials succeeded")
	}
	c.ZKAuthFile = "/x"
	c.ZKAuth = "u:p"
	if _, _, _, err := c.validate(); err == nil {
		t.Fatal("validate() with both --zk-auth and --zk-auth-file succeeded")
	}
	c.ZKAuthFile = ""
	l, servers, _, err := c.validate()
	if err != nil || l.Root() != "/rk" || len(servers) != 1 {
		t.Fatalf("validate() = %v %v %v", l.Root(), servers, err)
	}
}
