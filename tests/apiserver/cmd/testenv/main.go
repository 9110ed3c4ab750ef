// Command testenv runs a throwaway etcd + kube-apiserver pair on loopback for
// integration tests, and mints ServiceAccount token kubeconfigs.
//
//	testenv up --dir DIR [--bin BINDIR] [--timeout 120s] [--watch-pid N] [--apiserver-arg=--flag=value ...]
//	testenv token --kubeconfig K --namespace NS --serviceaccount SA --out FILE [--duration 24h]
//	testenv yaml2json < MANIFEST   (decodes as kubectl apply -f does; one JSON document per line)
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func init() {
	// Pdeathsig fires when the thread that started the child exits, so main
	// stays on one thread for the life of the process.
	runtime.LockOSThread()
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = cmdUp(os.Args[2:])
	case "token":
		err = cmdToken(os.Args[2:])
	case "yaml2json":
		err = cmdYAML2JSON(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: testenv up --dir DIR [--bin BINDIR] [--timeout 120s] [--watch-pid N] [--apiserver-arg ARG]...")
	fmt.Fprintln(os.Stderr, "       testenv token --kubeconfig K --namespace NS --serviceaccount SA --out FILE [--duration 24h]")
	fmt.Fprintln(os.Stderr, "       testenv yaml2json < MANIFEST")
	os.Exit(2)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// ---- up ----

type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func cmdUp(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", "", "working directory (certs, etcd data, logs, kubeconfig)")
	bin := fs.String("bin", "", "directory holding etcd and kube-apiserver (default: next to testenv)")
	timeout := fs.Duration("timeout", 120*time.Second, "how long to wait for the API server to be ready")
	watchPID := fs.Int("watch-pid", -1, "exit when this process is gone; -1 = the parent at start, 0 = never")
	var extra multiFlag
	fs.Var(&extra, "apiserver-arg", "extra kube-apiserver flag (repeatable)")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("--dir is required")
	}
	d, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if *bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*bin = filepath.Dir(exe)
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(*bin, b)); err != nil {
			return fmt.Errorf("missing binary (run build.sh or pass --bin): %w", err)
		}
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(d, "etcd")); err == nil {
		return fmt.Errorf("%s/etcd already exists, so pass a fresh --dir", d)
	}
	_ = os.Remove(filepath.Join(d, "ready"))
	if err := os.WriteFile(filepath.Join(d, "testenv.pid"), []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
		return err
	}

	parent := os.Getppid()
	if *watchPID == -1 {
		*watchPID = parent
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	pki := filepath.Join(d, "pki")
	p, err := writePKI(pki)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	server := fmt.Sprintf("https://127.0.0.1:%d", ports[2])

	etcd, err := startChild(d, "etcd", filepath.Join(*bin, "etcd"),
		"--name=testenv",
		"--data-dir="+filepath.Join(d, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=testenv="+peerURL,
		"--unsafe-no-fsync=true",
	)
	if err != nil {
		return err
	}
	children := []*child{etcd}
	fail := func(err error) error {
		stopAll(children)
		return err
	}

	// Wait for etcd first, so the apiserver log is not full of connection errors.
	if err := poll(30*time.Second, sigs, children, func() bool {
		return httpOK(http.DefaultClient, etcdURL+"/health")
	}); err != nil {
		return fail(fmt.Errorf("etcd: %w", err))
	}

	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", ports[2]),
		"--cert-dir=" + pki,
		"--tls-cert-file=" + p.serverCert,
		"--tls-private-key-file=" + p.serverKey,
		"--client-ca-file=" + p.caCert,
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + server,
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--disable-admission-plugins=ServiceAccount",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		// The lease reconciler rejects a loopback advertise address (1.37).
		"--endpoint-reconciler-type=none",
	}
	apiArgs = append(apiArgs, extra...)
	api, err := startChild(d, "kube-apiserver", filepath.Join(*bin, "kube-apiserver"), apiArgs...)
	if err != nil {
		return fail(err)
	}
	children = []*child{api, etcd} // stopAll stops them in this order

	client, err := adminHTTPClient(p)
	if err != nil {
		return fail(err)
	}
	if err := poll(*timeout, sigs, children, func() bool {
		return httpOK(client, server+"/readyz") &&
			httpOK(client, server+"/api/v1/namespaces/default")
	}); err != nil {
		return fail(fmt.Errorf("kube-apiserver: %w", err))
	}

	kubeconfig := filepath.Join(d, "kubeconfig")
	if err := writeAdminKubeconfig(kubeconfig, server, p); err != nil {
		return fail(err)
	}
	ready := fmt.Sprintf("KUBECONFIG=%s\nSERVER=%s\nETCD_URL=%s\nTESTENV_PID=%d\nAPISERVER_PID=%d\nETCD_PID=%d\n",
		kubeconfig, server, etcdURL, os.Getpid(), api.cmd.Process.Pid, etcd.cmd.Process.Pid)
	if err := writeFileAtomic(filepath.Join(d, "ready"), []byte(ready), 0o644); err != nil {
		return fail(err)
	}
	fmt.Printf("testenv: ready in %s\n%s", d, ready)

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "testenv: %s, stopping\n", s)
			_ = os.Remove(filepath.Join(d, "ready"))
			stopAll(children)
			return nil
		case <-api.done:
			_ = os.Remove(filepath.Join(d, "ready"))
			return fail(childDied(api))
		case <-etcd.done:
			_ = os.Remove(filepath.Join(d, "ready"))
			return fail(childDied(etcd))
		case <-tick.C:
			if *watchPID > 0 && !alive(*watchPID, parent) {
				fmt.Fprintf(os.Stderr, "testenv: process %d is gone, stopping\n", *watchPID)
				_ = os.Remove(filepath.Join(d, "ready"))
				stopAll(children)
				return nil
			}
		}
	}
}

// alive reports whether pid still exists. When pid is the parent at start, a
// changed getppid also means it is gone.
func alive(pid, parent int) bool {
	if pid == parent && os.Getppid() != parent {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func startChild(dir, name, path string, args ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(f, "# %s %s\n", path, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	_ = os.WriteFile(filepath.Join(dir, name+".pid"), []byte(fmt.Sprintf("%d\n", cmd.Process.Pid)), 0o644)
	c := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	return c, nil
}

func childDied(c *child) error {
	fmt.Fprintf(os.Stderr, "testenv: %s exited early (%v); last lines of %s:\n", c.name, c.err, c.log)
	fmt.Fprint(os.Stderr, tail(c.log, 40))
	return fmt.Errorf("%s exited early: %v", c.name, c.err)
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error() + "\n"
	}
	lines := strings.SplitAfter(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "") + "\n"
}

// stopAll stops children in order: SIGTERM to the process group, SIGKILL after 10s.
func stopAll(children []*child) {
	for _, c := range children {
		select {
		case <-c.done:
			continue
		default:
		}
		pid := c.cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			fmt.Fprintf(os.Stderr, "testenv: %s did not stop in 10s, killing\n", c.name)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-c.done
		}
		_ = os.Remove(filepath.Join(filepath.Dir(c.log), c.name+".pid"))
	}
}

// poll runs check every 200ms until it succeeds, the timeout passes, a signal
// arrives, or a child exits.
func poll(timeout time.Duration, sigs chan os.Signal, children []*child, check func() bool) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if check() {
			return nil
		}
		for _, c := range children {
			select {
			case <-c.done:
				return childDied(c)
			default:
			}
		}
		select {
		case s := <-sigs:
			return fmt.Errorf("interrupted by %s while starting", s)
		case <-deadline:
			for _, c := range children {
				fmt.Fprintf(os.Stderr, "testenv: not ready after %s, last lines of %s:\n%s", timeout, c.log, tail(c.log, 40))
			}
			return fmt.Errorf("timed out after %s waiting for readiness", timeout)
		case <-tick.C:
		}
	}
}

func httpOK(c *http.Client, url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ---- certificates ----

type pkiFiles struct {
	caCert, serverCert, serverKey, adminCert, adminKey, saKey, saPub string
	caPEM, adminCertPEM, adminKeyPEM                                 []byte
}

func writePKI(dir string) (*pkiFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pkiFiles{
		caCert:     filepath.Join(dir, "ca.crt"),
		serverCert: filepath.Join(dir, "apiserver.crt"),
		serverKey:  filepath.Join(dir, "apiserver.key"),
		adminCert:  filepath.Join(dir, "admin.crt"),
		adminKey:   filepath.Join(dir, "admin.key"),
		saKey:      filepath.Join(dir, "sa.key"),
		saPub:      filepath.Join(dir, "sa.pub"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "testenv-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p.caPEM = pemBlock("CERTIFICATE", caDER)
	if err := os.WriteFile(p.caCert, p.caPEM, 0o644); err != nil {
		return nil, err
	}
	caKeyPEM, err := ecKeyPEM(caKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), caKeyPEM, 0o600); err != nil {
		return nil, err
	}

	leaf := func(tmpl *x509.Certificate, certPath, keyPath string) ([]byte, []byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl.SerialNumber = serial()
		tmpl.NotBefore = now.Add(-time.Hour)
		tmpl.NotAfter = now.Add(365 * 24 * time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			return nil, nil, err
		}
		certPEM := pemBlock("CERTIFICATE", der)
		keyPEM, err := ecKeyPEM(key)
		if err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
			return nil, nil, err
		}
		return certPEM, keyPEM, os.WriteFile(keyPath, keyPEM, 0o600)
	}
	if _, _, err := leaf(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default",
			"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.1")},
	}, p.serverCert, p.serverKey); err != nil {
		return nil, err
	}
	p.adminCertPEM, p.adminKeyPEM, err = leaf(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, p.adminCert, p.adminKey)
	if err != nil {
		return nil, err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.saKey, pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)), 0o600); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.saPub, pemBlock("PUBLIC KEY", pubDER), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func ecKeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k.(*ecdsa.PrivateKey))
	if err != nil {
		return nil, err
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

func adminHTTPClient(p *pkiFiles) (*http.Client, error) {
	pair, err := tls.X509KeyPair(p.adminCertPEM, p.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(p.caPEM) {
		return nil, errors.New("invalid CA certificate PEM")
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}},
		},
	}, nil
}

// ---- kubeconfigs ----

func writeAdminKubeconfig(path, server string, p *pkiFiles) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testenv"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: p.adminCertPEM, ClientKeyData: p.adminKeyPEM}
	cfg.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "testenv"
	return writeKubeconfig(path, cfg)
}

func writeKubeconfig(path string, cfg *clientcmdapi.Config) error {
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o600)
}

// ---- token ----

func cmdToken(args []string) error {
	fs := flag.NewFlagSet("token", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "admin kubeconfig")
	ns := fs.String("namespace", "default", "namespace of the ServiceAccount")
	sa := fs.String("serviceaccount", "", "ServiceAccount name")
	out := fs.String("out", "", "kubeconfig file to write")
	duration := fs.Duration("duration", 24*time.Hour, "token lifetime")
	_ = fs.Parse(args)
	if *kubeconfig == "" || *sa == "" || *out == "" {
		return errors.New("--kubeconfig, --serviceaccount and --out are required")
	}

	loader := &clientcmd.ClientConfigLoadingRules{ExplicitPath: *kubeconfig}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loader, &clientcmd.ConfigOverrides{})
	raw, err := cc.RawConfig()
	if err != nil {
		return err
	}
	rc, err := cc.ClientConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: *ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", *ns, err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(*ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: *sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create serviceaccount %s/%s: %w", *ns, *sa, err)
	}
	secs := int64(duration.Seconds())
	tr, err := cs.CoreV1().ServiceAccounts(*ns).CreateToken(ctx, *sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token request for %s/%s: %w", *ns, *sa, err)
	}

	ctxName := raw.CurrentContext
	kctx := raw.Contexts[ctxName]
	if kctx == nil {
		return fmt.Errorf("kubeconfig %s has no current context", *kubeconfig)
	}
	cluster := raw.Clusters[kctx.Cluster]
	if cluster == nil {
		return fmt.Errorf("kubeconfig %s: cluster %q not found", *kubeconfig, kctx.Cluster)
	}
	caData := cluster.CertificateAuthorityData
	if len(caData) == 0 && cluster.CertificateAuthority != "" {
		if caData, err = os.ReadFile(cluster.CertificateAuthority); err != nil {
			return err
		}
	}
	user := "system:serviceaccount:" + *ns + ":" + *sa
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testenv"] = &clientcmdapi.Cluster{Server: cluster.Server, CertificateAuthorityData: caData}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: user, Namespace: *ns}
	cfg.CurrentContext = "testenv"
	if err := writeKubeconfig(*out, cfg); err != nil {
		return err
	}
	fmt.Printf("wrote %s for %s (expires %s)\n", *out, user, tr.Status.ExpirationTimestamp.UTC().Format(time.RFC3339))
	return nil
}
