package main

import (
	"encoding/pem"
	"errors"
)

func pemToDER(b []byte) ([]byte, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not a PEM certificate")
	}
	return blk.Bytes, nil
}
