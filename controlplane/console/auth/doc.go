// Package auth holds the building blocks of the web console's login, kept
// free of HTTP handlers and storage so each can be tested on its own:
//
//   - Check: the source manual's password rules, each violation with its
//     own rule code and English message (the console translates by code);
//   - HashPassword, Verify, NeedsRehash: argon2id in a PHC-style string;
//   - HOTP, TOTP, NewTOTPSecret, TOTPURI, TOTPVerifier: RFC 4226/6238
//     one-time codes (SHA-1, 6 digits, 30 s) with ±1 step of clock skew
//     and replay refusal;
//   - GenerateRecoveryCodes, ConsumeRecoveryCode: one-time recovery codes,
//     stored only as hashes;
//   - Limiter: login attempts per client IP and per account, exponential
//     backoff then lockout, in bounded memory;
//   - SessionStore, SessionCookie: random session tokens stored hashed,
//     idle timeout, absolute lifetime, logout and a CSRF token per session.
//
// Every time-dependent part takes an injectable clock (func() time.Time).
// Nothing here logs; no secret (password, code, token) leaves a function
// except as its documented result.
package auth
