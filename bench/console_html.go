package bench

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"golang.org/x/net/html"
)

// consoleDoc is a console page as the figure's client reads it: the hidden
// fields of its forms, the text of its data-test hooks and the body's
// data-* attributes (data-csrf, data-page), as a browser would see them.
type consoleDoc struct {
	root *html.Node
}

// parseConsoleDoc parses an HTML page.
func parseConsoleDoc(r io.Reader) (*consoleDoc, error) {
	n, err := html.Parse(r)
	if err != nil {
		return nil, fmt.Errorf("parse console page: %w", err)
	}
	return &consoleDoc{root: n}, nil
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

// find returns the first element (document order) for which match holds.
func find(n *html.Node, match func(*html.Node) bool) *html.Node {
	if n.Type == html.ElementNode && match(n) {
		return n
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if f := find(c, match); f != nil {
			return f
		}
	}
	return nil
}

func byTest(test string) func(*html.Node) bool {
	return func(n *html.Node) bool { v, ok := attr(n, "data-test"); return ok && v == test }
}

// Form returns the action and the hidden fields of the form whose
// data-test is test.
func (d *consoleDoc) Form(test string) (action string, hidden map[string]string, err error) {
	f := find(d.root, func(n *html.Node) bool { return n.Data == "form" && byTest(test)(n) })
	if f == nil {
		return "", nil, fmt.Errorf("no form data-test=%q", test)
	}
	action, _ = attr(f, "action")
	hidden = map[string]string{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "input" {
			if t, _ := attr(n, "type"); strings.EqualFold(t, "hidden") {
				if name, ok := attr(n, "name"); ok {
					v, _ := attr(n, "value")
					hidden[name] = v
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(f)
	return action, hidden, nil
}

// Text returns the trimmed text content of the element whose data-test
// is test.
func (d *consoleDoc) Text(test string) (string, error) {
	n := find(d.root, byTest(test))
	if n == nil {
		return "", fmt.Errorf("no element data-test=%q", test)
	}
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.TrimSpace(b.String()), nil
}

// Body returns an attribute of <body> ("" when absent).
func (d *consoleDoc) Body(key string) string {
	b := find(d.root, func(n *html.Node) bool { return n.Data == "body" })
	if b == nil {
		return ""
	}
	v, _ := attr(b, key)
	return v
}

// Count returns how many elements have data-test test.
func (d *consoleDoc) Count(test string) int {
	n := 0
	var walk func(*html.Node)
	walk = func(x *html.Node) {
		if x.Type == html.ElementNode && byTest(test)(x) {
			n++
		}
		for c := x.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(d.root)
	return n
}

// errNoSecret is benchPassword's answer when the random bytes do not give
// an acceptable password.
var errNoSecret = errors.New("no password")

// benchPassword turns random bytes into a password the console's rules
// accept: letters and digits from an alphabet without look-alikes, no
// character twice in a row, at least one letter and one digit, at least
// 16 characters. It returns errNoSecret when the bytes do not give one
// (the caller draws again).
func benchPassword(random []byte) (string, error) {
	const alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	var b []byte
	for _, r := range random {
		c := alphabet[int(r)%len(alphabet)]
		if len(b) > 0 && b[len(b)-1] == c {
			continue
		}
		b = append(b, c)
	}
	s := string(b)
	if len(s) < 16 || !strings.ContainsFunc(s, unicode.IsDigit) || !strings.ContainsFunc(s, unicode.IsLetter) {
		return "", errNoSecret
	}
	return s, nil
}
