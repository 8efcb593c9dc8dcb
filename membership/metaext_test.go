package membership

import (
	"bytes"
	"strings"
	"testing"
)

func TestMetaEncryptionSection(t *testing.T) {
	for name, m := range validMetas() {
		plain := mustMarshal(t, m)
		m.Encryption = Encryption{Cipher: 1}
		for i := range m.Encryption.Key {
			m.Encryption.Key[i] = byte(i + 1)
		}
		b := mustMarshal(t, m)
		if len(b) != len(plain)+2+33 || !bytes.Equal(b[:len(plain)], plain) {
			t.Fatalf("%s: the section is not a trailer of the plain record: %x", name, b)
		}
		var got Meta
		if err := got.UnmarshalBinary(b); err != nil || got != m {
			t.Fatalf("%s: round trip: %+v, %v", name, got, err)
		}
		if len(b) > 512 {
			t.Fatalf("%s: %d bytes, over memberlist's limit", name, len(b))
		}
	}
	m := validMetas()["v4 udp"]
	base := mustMarshal(t, m)
	key := bytes.Repeat([]byte{7}, 32)
	for _, tt := range []struct {
		name string
		sec  []byte
		want string
	}{
		{"no cipher", append([]byte{1, 33, 0}, key...), "without a cipher"},
		{"zero key", append([]byte{1, 33, 2}, make([]byte, 32)...), "all-zero key"},
		{"short", []byte{1, 33, 1, 2}, "truncated"},
		{"wrong length", append([]byte{1, 32}, key...), "wrong length"},
		{"unknown", []byte{9, 0}, "unknown section"},
		{"repeated", append(append([]byte{1, 33, 1}, key...), append([]byte{1, 33, 1}, key...)...), "out of order"},
	} {
		var got Meta
		err := got.UnmarshalBinary(append(bytes.Clone(base), tt.sec...))
		if err == nil || !strings.Contains(err.Error(), tt.want) || got != (Meta{}) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	bad := m
	bad.Encryption.Cipher = 1
	if _, err := bad.MarshalBinary(); err == nil {
		t.Error("marshaled an encryption section with a zero key")
	}
}
