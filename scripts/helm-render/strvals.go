// The --set/--set-string/--set-file/--set-json parser, ported from helm.sh/helm/v3 v3.16.x
// pkg/strvals/parser.go.
//
// Copyright The Helm Authors; licensed under the Apache License, Version 2.0
// (http://www.apache.org/licenses/LICENSE-2.0). Changes from upstream: the package is folded into
// package main, so its exported functions carry a "strvals" prefix (strvals.ParseInto is
// strvalsParseInto) and the unexported ones an "sv" prefix. ToYAML is left out, and Parse,
// ParseString and ParseFile, which only the tests use, live in strvals_test.go.

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
)

// errNotList indicates that a non-list was treated as a list.
var errNotList = errors.New("not a list")

// strvalsMaxIndex is the maximum index that will be allowed by setIndex.
// The default value 65536 = 1024 * 64
var strvalsMaxIndex = 65536

// strvalsMaxNestedNameLevel is the maximum level of nesting for a value name that
// will be allowed.
var strvalsMaxNestedNameLevel = 30

// strvalsParseInto parses a strvals line and merges the result into dest.
//
// If the strval string has a key that exists in dest, it overwrites the
// dest version.
func strvalsParseInto(s string, dest map[string]interface{}) error {
	scanner := bytes.NewBufferString(s)
	t := newSVParser(scanner, dest, false)
	return t.parse()
}

// strvalsParseIntoString parses a strvals line and merges the result into dest.
//
// This method always returns a string as the value.
func strvalsParseIntoString(s string, dest map[string]interface{}) error {
	scanner := bytes.NewBufferString(s)
	t := newSVParser(scanner, dest, true)
	return t.parse()
}

// strvalsParseJSON parses a string with format key1=val1, key2=val2, ...
// where values are json strings (null, or scalars, or arrays, or objects).
// An empty val is treated as null.
//
// If a key exists in dest, the new value overwrites the dest version.
func strvalsParseJSON(s string, dest map[string]interface{}) error {
	scanner := bytes.NewBufferString(s)
	t := newSVJSONParser(scanner, dest)
	return t.parse()
}

// strvalsParseIntoFile parses a filevals line and merges the result into dest.
//
// This method always returns a string as the value.
func strvalsParseIntoFile(s string, dest map[string]interface{}, reader runesValueReader) error {
	scanner := bytes.NewBufferString(s)
	t := newSVFileParser(scanner, dest, reader)
	return t.parse()
}

// runesValueReader is a function that takes the given value (a slice of runes)
// and returns the parsed value
type runesValueReader func([]rune) (interface{}, error)

// svParser is a simple parser that takes a strvals line and parses it into a
// map representation.
//
// where sc is the source of the original data being parsed
// where data is the final parsed data from the parses with correct types
type svParser struct {
	sc        *bytes.Buffer
	data      map[string]interface{}
	reader    runesValueReader
	isjsonval bool
}

func newSVParser(sc *bytes.Buffer, data map[string]interface{}, stringBool bool) *svParser {
	stringConverter := func(rs []rune) (interface{}, error) {
		return svTypedVal(rs, stringBool), nil
	}
	return &svParser{sc: sc, data: data, reader: stringConverter}
}

func newSVJSONParser(sc *bytes.Buffer, data map[string]interface{}) *svParser {
	return &svParser{sc: sc, data: data, reader: nil, isjsonval: true}
}

func newSVFileParser(sc *bytes.Buffer, data map[string]interface{}, reader runesValueReader) *svParser {
	return &svParser{sc: sc, data: data, reader: reader}
}

func (t *svParser) parse() error {
	for {
		err := t.key(t.data, 0)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
}

func svRuneSet(r []rune) map[rune]bool {
	s := make(map[rune]bool, len(r))
	for _, rr := range r {
		s[rr] = true
	}
	return s
}

func (t *svParser) key(data map[string]interface{}, nestedNameLevel int) (reterr error) {
	defer func() {
		if r := recover(); r != nil {
			reterr = fmt.Errorf("unable to parse key: %s", r)
		}
	}()
	stop := svRuneSet([]rune{'=', '[', ',', '.'})
	for {
		switch k, last, err := svRunesUntil(t.sc, stop); {
		case err != nil:
			if len(k) == 0 {
				return err
			}
			return fmt.Errorf("key %q has no value", string(k))
		case last == '[':
			// We are in a list index context, so we need to set an index.
			i, err := t.keyIndex()
			if err != nil {
				return fmt.Errorf("error parsing index: %w", err)
			}
			kk := string(k)
			// Find or create target list
			list := []interface{}{}
			if _, ok := data[kk]; ok {
				list = data[kk].([]interface{})
			}

			// Now we need to get the value after the ].
			list, err = t.listItem(list, i, nestedNameLevel)
			svSet(data, kk, list)
			return err
		case last == '=':
			if t.isjsonval {
				empval, err := t.emptyVal()
				if err != nil {
					return err
				}
				if empval {
					svSet(data, string(k), nil)
					return nil
				}
				// parse jsonvals by using Go’s JSON standard library
				// Decode is preferred to Unmarshal in order to parse just the json parts of the list key1=jsonval1,key2=jsonval2,...
				// Since Decode has its own buffer that consumes more characters (from underlying t.sc) than the ones actually decoded,
				// we invoke Decode on a separate reader built with a copy of what is left in t.sc. After Decode is executed, we
				// discard in t.sc the chars of the decoded json value (the number of those characters is returned by InputOffset).
				var jsonval interface{}
				dec := json.NewDecoder(strings.NewReader(t.sc.String()))
				if err = dec.Decode(&jsonval); err != nil {
					return err
				}
				svSet(data, string(k), jsonval)
				if _, err = io.CopyN(io.Discard, t.sc, dec.InputOffset()); err != nil {
					return err
				}
				// skip possible blanks and comma
				_, err = t.emptyVal()
				return err
			}
			// End of key. Consume =, Get value.
			// FIXME: Get value list first
			vl, e := t.valList()
			switch {
			case e == nil:
				svSet(data, string(k), vl)
				return nil
			case errors.Is(e, io.EOF):
				svSet(data, string(k), "")
				return e
			case errors.Is(e, errNotList):
				rs, e := t.val()
				if e != nil && !errors.Is(e, io.EOF) {
					return e
				}
				v, e := t.reader(rs)
				svSet(data, string(k), v)
				return e
			default:
				return e
			}
		case last == ',':
			// No value given. Set the value to empty string. Return error.
			svSet(data, string(k), "")
			return fmt.Errorf("key %q has no value (cannot end with ,)", string(k))
		case last == '.':
			// Check value name is within the maximum nested name level
			nestedNameLevel++
			if nestedNameLevel > strvalsMaxNestedNameLevel {
				return fmt.Errorf("value name nested level is greater than maximum supported nested level of %d", strvalsMaxNestedNameLevel)
			}

			// First, create or find the target map.
			inner := map[string]interface{}{}
			if _, ok := data[string(k)]; ok {
				inner = data[string(k)].(map[string]interface{})
			}

			// Recurse
			e := t.key(inner, nestedNameLevel)
			if e == nil && len(inner) == 0 {
				return fmt.Errorf("key map %q has no value", string(k))
			}
			if len(inner) != 0 {
				svSet(data, string(k), inner)
			}
			return e
		}
	}
}

func svSet(data map[string]interface{}, key string, val interface{}) {
	// If key is empty, don't set it.
	if len(key) == 0 {
		return
	}
	data[key] = val
}

func svSetIndex(list []interface{}, index int, val interface{}) (l2 []interface{}, err error) {
	// There are possible index values that are out of range on a target system
	// causing a panic. This will catch the panic and return an error instead.
	// The value of the index that causes a panic varies from system to system.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("error processing index %d: %s", index, r)
		}
	}()

	if index < 0 {
		return list, fmt.Errorf("negative %d index not allowed", index)
	}
	if index > strvalsMaxIndex {
		return list, fmt.Errorf("index of %d is greater than maximum supported index of %d", index, strvalsMaxIndex)
	}
	if len(list) <= index {
		newlist := make([]interface{}, index+1)
		copy(newlist, list)
		list = newlist
	}
	list[index] = val
	return list, nil
}

func (t *svParser) keyIndex() (int, error) {
	// First, get the key.
	stop := svRuneSet([]rune{']'})
	v, _, err := svRunesUntil(t.sc, stop)
	if err != nil {
		return 0, err
	}
	// v should be the index
	return strconv.Atoi(string(v))

}

func (t *svParser) listItem(list []interface{}, i, nestedNameLevel int) ([]interface{}, error) {
	if i < 0 {
		return list, fmt.Errorf("negative %d index not allowed", i)
	}
	stop := svRuneSet([]rune{'[', '.', '='})
	switch k, last, err := svRunesUntil(t.sc, stop); {
	case len(k) > 0:
		return list, fmt.Errorf("unexpected data at end of array index: %q", k)
	case err != nil:
		return list, err
	case last == '=':
		if t.isjsonval {
			empval, err := t.emptyVal()
			if err != nil {
				return list, err
			}
			if empval {
				return svSetIndex(list, i, nil)
			}
			// parse jsonvals by using Go’s JSON standard library
			// Decode is preferred to Unmarshal in order to parse just the json parts of the list key1=jsonval1,key2=jsonval2,...
			// Since Decode has its own buffer that consumes more characters (from underlying t.sc) than the ones actually decoded,
			// we invoke Decode on a separate reader built with a copy of what is left in t.sc. After Decode is executed, we
			// discard in t.sc the chars of the decoded json value (the number of those characters is returned by InputOffset).
			var jsonval interface{}
			dec := json.NewDecoder(strings.NewReader(t.sc.String()))
			if err = dec.Decode(&jsonval); err != nil {
				return list, err
			}
			if list, err = svSetIndex(list, i, jsonval); err != nil {
				return list, err
			}
			if _, err = io.CopyN(io.Discard, t.sc, dec.InputOffset()); err != nil {
				return list, err
			}
			// skip possible blanks and comma
			_, err = t.emptyVal()
			return list, err
		}
		vl, e := t.valList()
		switch {
		case e == nil:
			return svSetIndex(list, i, vl)
		case errors.Is(e, io.EOF):
			return svSetIndex(list, i, "")
		case errors.Is(e, errNotList):
			rs, e := t.val()
			if e != nil && !errors.Is(e, io.EOF) {
				return list, e
			}
			v, e := t.reader(rs)
			if e != nil {
				return list, e
			}
			return svSetIndex(list, i, v)
		default:
			return list, e
		}
	case last == '[':
		// now we have a nested list. Read the index and handle.
		nextI, err := t.keyIndex()
		if err != nil {
			return list, fmt.Errorf("error parsing index: %w", err)
		}
		var crtList []interface{}
		if len(list) > i {
			// If nested list already exists, take the value of list to next cycle.
			existed := list[i]
			if existed != nil {
				crtList = list[i].([]interface{})
			}
		}
		// Now we need to get the value after the ].
		list2, err := t.listItem(crtList, nextI, nestedNameLevel)
		if err != nil {
			return list, err
		}
		return svSetIndex(list, i, list2)
	case last == '.':
		// We have a nested object. Send to t.key
		inner := map[string]interface{}{}
		if len(list) > i {
			var ok bool
			inner, ok = list[i].(map[string]interface{})
			if !ok {
				// We have indices out of order. Initialize empty value.
				list[i] = map[string]interface{}{}
				inner = list[i].(map[string]interface{})
			}
		}

		// Recurse
		e := t.key(inner, nestedNameLevel)
		if e != nil {
			return list, e
		}
		return svSetIndex(list, i, inner)
	default:
		return nil, fmt.Errorf("parse error: unexpected token %v", last)
	}
}

// check for an empty value
// read and consume optional spaces until comma or EOF (empty val) or any other char (not empty val)
// comma and spaces are consumed, while any other char is not consumed
func (t *svParser) emptyVal() (bool, error) {
	for {
		r, _, e := t.sc.ReadRune()
		if e == io.EOF {
			return true, nil
		}
		if e != nil {
			return false, e
		}
		if r == ',' {
			return true, nil
		}
		if !unicode.IsSpace(r) {
			_ = t.sc.UnreadRune()
			return false, nil
		}
	}
}

func (t *svParser) val() ([]rune, error) {
	stop := svRuneSet([]rune{','})
	v, _, err := svRunesUntil(t.sc, stop)
	return v, err
}

func (t *svParser) valList() ([]interface{}, error) {
	r, _, e := t.sc.ReadRune()
	if e != nil {
		return []interface{}{}, e
	}

	if r != '{' {
		_ = t.sc.UnreadRune()
		return []interface{}{}, errNotList
	}

	list := []interface{}{}
	stop := svRuneSet([]rune{',', '}'})
	for {
		switch rs, last, err := svRunesUntil(t.sc, stop); {
		case err != nil:
			if errors.Is(err, io.EOF) {
				err = errors.New("list must terminate with '}'")
			}
			return list, err
		case last == '}':
			// If this is followed by ',', consume it.
			if r, _, e := t.sc.ReadRune(); e == nil && r != ',' {
				_ = t.sc.UnreadRune()
			}
			v, e := t.reader(rs)
			list = append(list, v)
			return list, e
		case last == ',':
			v, e := t.reader(rs)
			if e != nil {
				return list, e
			}
			list = append(list, v)
		}
	}
}

func svRunesUntil(in io.RuneReader, stop map[rune]bool) ([]rune, rune, error) {
	v := []rune{}
	for {
		switch r, _, e := in.ReadRune(); {
		case e != nil:
			return v, r, e
		case svInMap(r, stop):
			return v, r, nil
		case r == '\\':
			next, _, e := in.ReadRune()
			if e != nil {
				return v, next, e
			}
			v = append(v, next)
		default:
			v = append(v, r)
		}
	}
}

func svInMap(k rune, m map[rune]bool) bool {
	_, ok := m[k]
	return ok
}

func svTypedVal(v []rune, st bool) interface{} {
	val := string(v)

	if st {
		return val
	}

	if strings.EqualFold(val, "true") {
		return true
	}

	if strings.EqualFold(val, "false") {
		return false
	}

	if strings.EqualFold(val, "null") {
		return nil
	}

	if strings.EqualFold(val, "0") {
		return int64(0)
	}

	// If this value does not start with zero, try parsing it to an int
	if len(val) != 0 && val[0] != '0' {
		if iv, err := strconv.ParseInt(val, 10, 64); err == nil {
			return iv
		}
	}

	return val
}
