package console

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// Upgrade bounds: a bundle is a root of at most a slot (640 MiB on the
// image) plus a kernel and an initrd; the reader itself enforces the exact
// limits. Uploading or downloading one may take minutes.
const (
	maxUpgradeBody = 2 << 30
	upgradeTimeout = 30 * time.Minute
)

// upgradeData is the Upgrade page's data.
type upgradeData struct {
	Image    *model.ImageStatus // nil: not on the image
	State    UpgradeState
	HasState bool
}

func (c *Console) upgradePage(w http.ResponseWriter, r *http.Request, p pageData) {
	ctx := r.Context()
	st, ok := c.b.UpgradeState(ctx)
	p.Data = upgradeData{Image: c.b.Status(ctx).Image, State: st, HasState: ok}
	c.render(w, r, http.StatusOK, "upgrade", p)
}

// upgradeAnswer is the answer to POST /upgrade and /upgrade/url.
type upgradeAnswer struct {
	Version string `json:"version"`
	Message string `json:"message"`
}

// uploadUpgrade is POST /upgrade: the bundle is the raw request body (the
// page's script sends the file as it is, with the CSRF header), streamed
// to the backend, never held in memory.
func (c *Console) uploadUpgrade(w http.ResponseWriter, r *http.Request, p pageData) {
	if r.ContentLength > maxUpgradeBody {
		writePageJSON(w, http.StatusRequestEntityTooLarge, pageJSONError{Error: c.cat.text(p.Lang, "upgrade.err.too_large"), Code: "too_large"})
		return
	}
	// The server's read timeout is for requests of a few KB.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(upgradeTimeout))
	_ = rc.SetWriteDeadline(time.Now().Add(upgradeTimeout + time.Minute))
	body := http.MaxBytesReader(w, r.Body, maxUpgradeBody)
	c.receive(w, r, p, body)
}

// fetchUpgrade is POST /upgrade/url (url=): the gateway downloads the
// bundle from the admin's URL (http or https) and takes it as an upload.
func (c *Console) fetchUpgrade(w http.ResponseWriter, r *http.Request, p pageData) {
	raw := r.PostFormValue("url")
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(raw) > 2048 {
		writePageJSON(w, http.StatusBadRequest, pageJSONError{Error: c.cat.text(p.Lang, "upgrade.err.url"), Code: "invalid_url"})
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(upgradeTimeout + time.Minute))
	ctx, cancel := context.WithTimeout(r.Context(), upgradeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		writePageJSON(w, http.StatusBadRequest, pageJSONError{Error: c.cat.text(p.Lang, "upgrade.err.url"), Code: "invalid_url"})
		return
	}
	resp, err := c.httpClient().Do(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		err = errors.New(resp.Status)
	}
	if err != nil {
		c.log.Warn("upgrade download failed", "url", u.Redacted(), "err", err)
		writePageJSON(w, http.StatusBadGateway, pageJSONError{Error: c.cat.text(p.Lang, "upgrade.err.download", err.Error()), Code: "download"})
		return
	}
	defer resp.Body.Close()
	c.receive(w, r.WithContext(ctx), p, io.LimitReader(resp.Body, maxUpgradeBody))
}

// httpClient is the client URL downloads use (tests set
// Options.HTTPClient).
func (c *Console) httpClient() *http.Client {
	if c.opts.HTTPClient != nil {
		return c.opts.HTTPClient
	}
	return http.DefaultClient
}

// receive hands a bundle to the backend and answers with what came of it.
func (c *Console) receive(w http.ResponseWriter, r *http.Request, p pageData, body io.Reader) {
	v, err := c.b.ReceiveUpgrade(r.Context(), body)
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		c.log.Info("upgrade bundle accepted", "version", v, "by", p.User)
		writePageJSON(w, http.StatusOK, upgradeAnswer{Version: v, Message: c.cat.text(p.Lang, "upgrade.received", v)})
	case errors.As(err, &mbe):
		writePageJSON(w, http.StatusRequestEntityTooLarge, pageJSONError{Error: c.cat.text(p.Lang, "upgrade.err.too_large"), Code: "too_large"})
	case errors.Is(err, model.ErrForbidden):
		writePageJSON(w, http.StatusForbidden, pageJSONError{Error: c.cat.text(p.Lang, "upgrade.not_image"), Code: "not_image"})
	case errors.Is(err, model.ErrInvalid):
		writePageJSON(w, http.StatusBadRequest, pageJSONError{Error: c.cat.text(p.Lang, "upgrade.err.invalid", err.Error()), Code: "invalid"})
	default:
		c.log.Error("upgrade bundle", "err", err)
		writePageJSON(w, http.StatusInternalServerError, pageJSONError{Error: c.cat.text(p.Lang, "common.err.internal"), Code: "internal"})
	}
}
