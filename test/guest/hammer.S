# The hammer guest: COUNT 4-byte reads of ADDR, each sorted by its value: V1, V2, all-ones, or
# anything else (counted, the last one kept). The VMM moves and toggles what ADDR hits meanwhile;
# any value but those three is a torn or stale access. The checkpoint port marks the end.
  .intel_syntax noprefix
  .code32
  .set PARAMS, 0x7000
  .set RESULTS, 0x7100
  .set CHECK, 0x501

  .text
  .globl _start
_start:
  mov ebx, [PARAMS + 0x00]          # address
  mov ecx, [PARAMS + 0x04]          # count
  mov esi, [PARAMS + 0x08]          # V1
  mov edi, [PARAMS + 0x0c]          # V2
  xor eax, eax
  mov [RESULTS + 0x00], eax
  mov [RESULTS + 0x04], eax
  mov [RESULTS + 0x08], eax
  mov [RESULTS + 0x0c], eax
  mov [RESULTS + 0x10], eax
1:
  mov eax, [ebx]
  cmp eax, esi
  je 2f
  cmp eax, edi
  je 3f
  cmp eax, 0xffffffff
  je 4f
  inc dword ptr [RESULTS + 0x0c]
  mov [RESULTS + 0x10], eax
  jmp 5f
2:
  inc dword ptr [RESULTS + 0x00]
  jmp 5f
3:
  inc dword ptr [RESULTS + 0x04]
  jmp 5f
4:
  inc dword ptr [RESULTS + 0x08]
5:
  dec ecx
  jnz 1b
  mov dx, CHECK
  mov al, 0xff
  out dx, al
6:
  cli
  hlt
  jmp 6b
