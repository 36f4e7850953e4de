package upgrade

// CompareVersions orders two image versions as systemd-boot orders its
// entries' version fields (systemd's strverscmp_improved): -1 when a is
// older than b, 0 when they are equivalent, 1 when a is newer.
// systemd-boot boots the entry with the newest version first, so an
// upgrade must be newer than what runs.
//
// The strings are split into numeric and alphabetic segments, each
// optionally prefixed: '~' (a pre-release: older than anything), '-'
// (version/release separator), '^' (a patched release) or '.'; no prefix
// is newest. Numbers compare as numbers (leading zeros dropped); other
// characters only separate segments.
func CompareVersions(a, b string) int {
	if a == "" || b == "" {
		return cmp3(len(a), len(b))
	}
	i, j := 0, 0
	at := func(s string, k int) byte {
		if k < len(s) {
			return s[k]
		}
		return 0
	}
	for {
		for i < len(a) && !validVersionChar(a[i]) {
			i++
		}
		for j < len(b) && !validVersionChar(b[j]) {
			j++
		}
		ca, cb := at(a, i), at(b, j)
		if ca == '~' || cb == '~' {
			if r := cmpBool(ca != '~', cb != '~'); r != 0 {
				return r
			}
			i, j = i+1, j+1
			ca, cb = at(a, i), at(b, j)
		}
		if ca == 0 || cb == 0 {
			return cmp3(int(ca), int(cb))
		}
		for _, sep := range []byte{'-', '^', '.'} {
			if ca == sep || cb == sep {
				if r := cmpBool(ca != sep, cb != sep); r != 0 {
					return r
				}
				i, j = i+1, j+1
				ca, cb = at(a, i), at(b, j)
			}
		}
		if isDigit(ca) || isDigit(cb) {
			ea, eb := i, j
			for ea < len(a) && isDigit(a[ea]) {
				ea++
			}
			for eb < len(b) && isDigit(b[eb]) {
				eb++
			}
			if r := cmpBool(i != ea, j != eb); r != 0 {
				return r
			}
			for i < ea && a[i] == '0' {
				i++
			}
			for j < eb && b[j] == '0' {
				j++
			}
			if r := cmp3(ea-i, eb-j); r != 0 {
				return r
			}
			if r := cmpStr(a[i:ea], b[j:eb]); r != 0 {
				return r
			}
			i, j = ea, eb
		} else {
			ea, eb := i, j
			for ea < len(a) && isAlpha(a[ea]) {
				ea++
			}
			for eb < len(b) && isAlpha(b[eb]) {
				eb++
			}
			n := min(ea-i, eb-j)
			if r := cmpStr(a[i:i+n], b[j:j+n]); r != 0 {
				return r
			}
			if r := cmp3(ea-i, eb-j); r != 0 {
				return r
			}
			i, j = ea, eb
		}
	}
}

func validVersionChar(c byte) bool {
	return isDigit(c) || isAlpha(c) || c == '~' || c == '-' || c == '^' || c == '.'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func cmp3(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpBool(a, b bool) int {
	ai, bi := 0, 0
	if a {
		ai = 1
	}
	if b {
		bi = 1
	}
	return cmp3(ai, bi)
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
