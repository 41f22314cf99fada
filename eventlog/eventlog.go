// Package eventlog is the runtime event log of Confidential Containers'
// attestation agent (AAEL): events a workload records after launch
// ("domain operation content"), each extended into a measurement register
// so that evidence quoting the register proves the log.
//
// Entries use the TCG2 encoding Trustee's verifiers read (an EV_EVENT_TAG
// event whose data is the tagged event "AAEL" carrying the event's text),
// with one SHA-256 digest: the hash of the event data section, which is
// what the register is extended with.
//
// The log is written inside the TEE and read by relying parties, for whom
// it is untrusted until replayed against a quoted register: Parse bounds
// every size it reads and checks every digest; Replay recomputes the
// register.
package eventlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Limits on one event, so that neither a workload nor a log's reader can
// set an unbounded cost.
const (
	MaxName    = 256  // bytes of a domain or an operation
	MaxContent = 4096 // bytes of content
	// MaxEntries is how many entries Parse reads.
	MaxEntries = 65536
)

const (
	evEventTag   = 0x6        // EV_EVENT_TAG
	aaelTaggedID = 0x4141454c // "AAEL"
	algSHA256    = 0x000b     // TPM_ALG_SHA256
	digestCount  = 1
	// headerLen is an entry's fixed part before the event data: register,
	// type, digest count, algorithm, digest, event size.
	headerLen = 4 + 4 + 4 + 2 + sha256.Size + 4
	// maxEventData is the largest event data section an event makes.
	maxEventData = 8 + 2*MaxName + 2 + MaxContent
)

// Event is one record of the log.
type Event struct {
	Domain    string `json:"domain"`
	Operation string `json:"operation"`
	Content   string `json:"content"`
}

// Validate says what is wrong with an event, if anything: the domain and
// the operation are non-empty words (no spaces or control characters, since
// the text separates fields by spaces), the content is one line, and each
// is within its limit.
func (e Event) Validate() error {
	for _, f := range []struct{ name, v string }{{"domain", e.Domain}, {"operation", e.Operation}} {
		if f.v == "" {
			return fmt.Errorf("%s is empty", f.name)
		}
		if len(f.v) > MaxName {
			return fmt.Errorf("%s is %d bytes; at most %d", f.name, len(f.v), MaxName)
		}
		if i := strings.IndexFunc(f.v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
			return fmt.Errorf("%s %q has a space or control character at byte %d: it must be one word", f.name, f.v, i)
		}
	}
	if len(e.Content) > MaxContent {
		return fmt.Errorf("content is %d bytes; at most %d (record a digest of larger content)", len(e.Content), MaxContent)
	}
	if strings.ContainsAny(e.Content, "\n\r") {
		return errors.New("content has a line break: it must be one line")
	}
	return nil
}

// String is the event's text, as the log holds it.
func (e Event) String() string { return e.Domain + " " + e.Operation + " " + e.Content }

// eventData is the tagged event: "AAEL", the text's length, the text.
func (e Event) eventData() []byte {
	text := e.String()
	b := make([]byte, 8, 8+len(text))
	binary.LittleEndian.PutUint32(b, aaelTaggedID)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(text)))
	return append(b, text...)
}

// Entry encodes a valid event as a log entry for register reg, and returns
// the digest the register is extended with.
func (e Event) Entry(reg uint32) (entry []byte, digest [32]byte, err error) {
	if err := e.Validate(); err != nil {
		return nil, digest, err
	}
	data := e.eventData()
	digest = sha256.Sum256(data)
	b := make([]byte, 0, headerLen+len(data))
	b = binary.LittleEndian.AppendUint32(b, reg)
	b = binary.LittleEndian.AppendUint32(b, evEventTag)
	b = binary.LittleEndian.AppendUint32(b, digestCount)
	b = binary.LittleEndian.AppendUint16(b, algSHA256)
	b = append(b, digest[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...), digest, nil
}

// Record is a parsed entry.
type Record struct {
	Register uint32
	Event    Event
	Digest   [32]byte
}

// Parse reads a log of entries as Entry makes them. Every size is checked
// against what remains and against the limits, every digest against its
// data, every event against Validate.
func Parse(log []byte) ([]Record, error) {
	var out []Record
	for off := 0; off < len(log); {
		if len(out) == MaxEntries {
			return nil, fmt.Errorf("eventlog: more than %d entries", MaxEntries)
		}
		r, n, err := parseEntry(log[off:])
		if err != nil {
			return nil, fmt.Errorf("eventlog: entry %d at byte %d: %w", len(out), off, err)
		}
		out = append(out, r)
		off += n
	}
	return out, nil
}

func parseEntry(b []byte) (Record, int, error) {
	var r Record
	if len(b) < headerLen {
		return r, 0, fmt.Errorf("%d bytes left, an entry's header is %d", len(b), headerLen)
	}
	le := binary.LittleEndian
	r.Register = le.Uint32(b)
	if t := le.Uint32(b[4:]); t != evEventTag {
		return r, 0, fmt.Errorf("event type %#x, want EV_EVENT_TAG (%#x)", t, evEventTag)
	}
	if c := le.Uint32(b[8:]); c != digestCount {
		return r, 0, fmt.Errorf("%d digests, want %d", c, digestCount)
	}
	if a := le.Uint16(b[12:]); a != algSHA256 {
		return r, 0, fmt.Errorf("digest algorithm %#x, want SHA-256 (%#x)", a, algSHA256)
	}
	copy(r.Digest[:], b[14:14+sha256.Size])
	size := le.Uint32(b[headerLen-4:])
	if size > maxEventData || int(size) > len(b)-headerLen {
		return r, 0, fmt.Errorf("event data of %d bytes; %d remain, at most %d allowed", size, len(b)-headerLen, maxEventData)
	}
	data := b[headerLen : headerLen+int(size)]
	if sha256.Sum256(data) != r.Digest {
		return r, 0, errors.New("the digest is not that of the event data")
	}
	if len(data) < 8 || le.Uint32(data) != aaelTaggedID {
		return r, 0, errors.New(`the event data is not an "AAEL" tagged event`)
	}
	if n := le.Uint32(data[4:]); int(n) != len(data)-8 {
		return r, 0, fmt.Errorf("the tagged event says %d bytes, holds %d", n, len(data)-8)
	}
	text := data[8:]
	d, rest, ok1 := bytes.Cut(text, []byte(" "))
	op, content, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 {
		return r, 0, errors.New(`the event text is not "domain operation content"`)
	}
	r.Event = Event{Domain: string(d), Operation: string(op), Content: string(content)}
	if err := r.Event.Validate(); err != nil {
		return r, 0, err
	}
	return r, headerLen + int(size), nil
}

// Replay computes register reg from its value at reset, from, by extending
// it with the digest of each record for that register, in order: what a
// quote of the register shows when the log is complete. A TPM resets PCRs
// 17 to 22 to all ones, the others and TDX's RTMRs to zeros.
func Replay(records []Record, reg uint32, from [32]byte) [32]byte {
	v := from
	for _, r := range records {
		if r.Register != reg {
			continue
		}
		v = sha256.Sum256(append(v[:], r.Digest[:]...))
	}
	return v
}
