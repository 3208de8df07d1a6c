package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// TLSFiles are the PEM files of a test's own certificate authority: a CA,
// a server certificate for 127.0.0.1 and localhost, and a client
// certificate, each signed by the CA. They are made afresh by NewTLSFiles,
// so no test depends on a certificate that can expire in the repository.
type TLSFiles struct {
	CA         string // the CA's certificate
	ServerCert string
	ServerKey  string
	ClientCert string
	ClientKey  string
}

// NewTLSFiles makes a CA and a server and a client certificate signed by it
// (ECDSA P-256, valid for a day) and writes them to dir.
func NewTLSFiles(dir string) (*TLSFiles, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "idempay test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	f := &TLSFiles{CA: filepath.Join(dir, "ca.pem")}
	if err := writePEM(f.CA, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	for i, leaf := range []struct {
		cert, key *string
		name      string
		usage     x509.ExtKeyUsage
	}{
		{&f.ServerCert, &f.ServerKey, "server", x509.ExtKeyUsageServerAuth},
		{&f.ClientCert, &f.ClientKey, "client", x509.ExtKeyUsageClientAuth},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{CommonName: "idempay test " + leaf.name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{leaf.usage},
		}
		if leaf.usage == x509.ExtKeyUsageServerAuth {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		*leaf.cert, *leaf.key = filepath.Join(dir, leaf.name+".pem"), filepath.Join(dir, leaf.name+"-key.pem")
		if err := writePEM(*leaf.cert, "CERTIFICATE", der); err != nil {
			return nil, err
		}
		if err := writePEM(*leaf.key, "PRIVATE KEY", keyDER); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// StartRedisTLS starts a redis-server child like StartRedisWith that also
// serves TLS with files' server certificate on a second port, and returns
// the rediss:// URL of that port. clientCerts is redis-server's
// tls-auth-clients: "yes" (a client certificate signed by the CA is
// required), "optional" or "no". The plain port (URL) stays open for the
// readiness check and for tests that want to look inside.
func StartRedisTLS(files *TLSFiles, clientCerts string, args ...string) (rs *RedisServer, tlsURL string, err error) {
	for range 5 { // the TLS port can be taken between probe and bind: retry
		port, err := FreePort()
		if err != nil {
			return nil, "", err
		}
		rs, err = StartRedisWith(append([]string{"--save", "", "--appendonly", "no",
			"--tls-port", strconv.Itoa(port), "--tls-cert-file", files.ServerCert, "--tls-key-file", files.ServerKey,
			"--tls-ca-cert-file", files.CA, "--tls-auth-clients", clientCerts}, args...)...)
		if err == nil {
			return rs, fmt.Sprintf("rediss://127.0.0.1:%d", port), nil
		}
	}
	return nil, "", errors.New("testenv: redis-server with TLS did not start (is it built with TLS? Debian's is)")
}
