//go:build amd64 && !purego

#include "textflag.h"

// AES-XTS over one data unit in place with AES-NI, eight blocks at a time so
// that the AES unit's pipeline stays full. The round keys at xk are nr+1
// consecutive 16-byte keys in the order of use (for decryption: the
// equivalent inverse cipher's). Registers: X0-X7 the blocks, X8 the round
// key, X9 the running tweak, X10 scratch, X11 xtsAlpha, X12 a saved tweak;
// the frame holds the eight tweaks of the group.

// xtsAlpha masks the carries of a tweak's multiplication by alpha in
// GF(2^128) (little-endian): 0x87 into the low byte when the top bit was set,
// and the low qword's top bit into the high qword.
DATA xtsAlpha<>+0(SB)/4, $0x87
DATA xtsAlpha<>+4(SB)/4, $0
DATA xtsAlpha<>+8(SB)/4, $1
DATA xtsAlpha<>+12(SB)/4, $0
GLOBL xtsAlpha<>(SB), RODATA|NOPTR, $16

// TWEAK saves the running tweak as block i's, then multiplies it by alpha.
#define TWEAK(i) \
	MOVOU X9, (16*i)(SP); \
	PSHUFD $0x13, X9, X10; \
	PSRAL $31, X10; \
	PAND X11, X10; \
	PADDQ X9, X9; \
	PXOR X10, X9

// LOAD reads block i into r and XORs in its tweak and round key 0 (X8).
#define LOAD(i, r) \
	MOVOU (16*i)(SI), r; \
	MOVOU (16*i)(SP), X12; \
	PXOR X12, r; \
	PXOR X8, r

// STORE XORs block i's tweak into r and writes it back.
#define STORE(i, r) \
	MOVOU (16*i)(SP), X12; \
	PXOR X12, r; \
	MOVOU r, (16*i)(SI)

#define ROUND8(op) \
	op X8, X0; op X8, X1; op X8, X2; op X8, X3; \
	op X8, X4; op X8, X5; op X8, X6; op X8, X7

// XTS8 runs one group of eight blocks at SI with the round instructions
// OP and LAST; CX holds nr, AX the round keys.
#define XTS8(OP, LAST, rounds) \
	TWEAK(0); TWEAK(1); TWEAK(2); TWEAK(3); \
	TWEAK(4); TWEAK(5); TWEAK(6); TWEAK(7); \
	MOVOU 0(AX), X8; \
	LOAD(0, X0); LOAD(1, X1); LOAD(2, X2); LOAD(3, X3); \
	LOAD(4, X4); LOAD(5, X5); LOAD(6, X6); LOAD(7, X7); \
	MOVQ AX, BX; \
	MOVQ CX, R8; \
	DECQ R8; \
rounds: \
	ADDQ $16, BX; \
	MOVOU 0(BX), X8; \
	ROUND8(OP); \
	DECQ R8; \
	JNZ rounds; \
	MOVOU 16(BX), X8; \
	ROUND8(LAST); \
	STORE(0, X0); STORE(1, X1); STORE(2, X2); STORE(3, X3); \
	STORE(4, X4); STORE(5, X5); STORE(6, X6); STORE(7, X7)

// SETUP loads the arguments: DX counts groups of eight blocks.
#define SETUP \
	MOVQ nr+0(FP), CX; \
	MOVQ xk+8(FP), AX; \
	MOVQ buf_base+16(FP), SI; \
	MOVQ buf_len+24(FP), DX; \
	MOVQ tweak+40(FP), DI; \
	SHRQ $7, DX; \
	MOVOU 0(DI), X9; \
	MOVOU xtsAlpha<>(SB), X11

// WIPE leaves no tweak or plaintext in the frame or the registers.
#define WIPE \
	PXOR X0, X0; \
	MOVOU X0, 0(SP); MOVOU X0, 16(SP); MOVOU X0, 32(SP); MOVOU X0, 48(SP); \
	MOVOU X0, 64(SP); MOVOU X0, 80(SP); MOVOU X0, 96(SP); MOVOU X0, 112(SP); \
	PXOR X1, X1; PXOR X2, X2; PXOR X3, X3; PXOR X4, X4; PXOR X5, X5; \
	PXOR X6, X6; PXOR X7, X7; PXOR X8, X8; PXOR X9, X9; PXOR X10, X10; PXOR X12, X12

// func xtsEncAsm(nr int, xk *byte, buf []byte, tweak *[16]byte)
TEXT ·xtsEncAsm(SB), NOSPLIT, $128-48
	SETUP
eloop:
	TESTQ DX, DX
	JZ edone
	XTS8(AESENC, AESENCLAST, eround)
	ADDQ $128, SI
	DECQ DX
	JMP eloop
edone:
	WIPE
	RET

// func xtsDecAsm(nr int, xk *byte, buf []byte, tweak *[16]byte)
TEXT ·xtsDecAsm(SB), NOSPLIT, $128-48
	SETUP
dloop:
	TESTQ DX, DX
	JZ ddone
	XTS8(AESDEC, AESDECLAST, dround)
	ADDQ $128, SI
	DECQ DX
	JMP dloop
ddone:
	WIPE
	RET
