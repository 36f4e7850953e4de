package tlscert_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"

	"github.com/cloudsteer/cloudsteer/controlplane/console/tlscert"
)

// The console's listeners: HTTPS with the self-made certificate, and the
// plain-HTTP port that only redirects to it (compiled, not run).
func ExampleLoadOrCreate() {
	lan := []netip.Addr{netip.MustParseAddr("10.10.0.1")}
	cert, err := tlscert.LoadOrCreate("/var/lib/cloudsteer/console", []string{"cloudsteer.lan"}, lan, nil)
	if err != nil {
		return
	}
	fmt.Println("console certificate fingerprint (SHA-256):", cert.Fingerprint())

	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	httpsLn, _ := lc.Listen(context.Background(), "tcp", "10.10.0.1:8443")
	httpLn, _ := lc.Listen(context.Background(), "tcp", "10.10.0.1:80")
	redirect := tlscert.Redirector{HTTPSPort: 8443, Allow: func(a netip.Addr, name string) bool {
		return slices.Contains(lan, a) || name == "cloudsteer.lan"
	}}
	go (&http.Server{Handler: redirect}).Serve(httpLn)
	srv := &http.Server{Handler: http.NotFoundHandler(), TLSConfig: cert.TLSConfig()}
	_ = srv.ServeTLS(httpsLn, "", "")
}
