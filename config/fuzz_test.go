package config

import (
	"errors"
	"testing"
)

// FuzzConfig feeds arbitrary bytes to the config file parser and the
// validation after it: never a panic, and every refusal is a usage error.
func FuzzConfig(f *testing.F) {
	f.Add([]byte("name: a\nnetwork: 10.244.0.0/16\nsubnet: 10.244.1.0/24\n"))
	f.Add([]byte("network: 10.244.0.0/16\nsubnet: 10.244.1.0/24\nencap: vxlan\npeers: [{name: k, subnet: 10.244.9.0/24, ip: 192.0.2.9, mac: '02:00:00:00:00:09'}]\n"))
	f.Add([]byte("join: [a, 'b:1']\nport: 0\nmtu: -1\n"))
	f.Add([]byte("{{{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeConfig(data, "fuzz.yaml")
		if err == nil {
			if c.Name == "" {
				c.Name = "fuzz"
			}
			_, err = validate(c, source{file: "fuzz.yaml"})
		}
		var ue *UsageError
		if err != nil && !errors.As(err, &ue) {
			t.Fatalf("non-usage error %T: %v", err, err)
		}
	})
}
