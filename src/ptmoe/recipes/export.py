"""`ptmoe export --format peft ADAPTER OUT`: a ptmoe adapter in another library's format.
`pt` -> PEFT PROMPT_TUNING, `lora` -> PEFT LoRA; other methods are refused with the reason."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("adapter", help="ptmoe adapter folder (e.g. runs/x/best)")
    p.add_argument("out", help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--format", default="peft", choices=["peft"], help="target format (default: peft)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args):
    # on use: `ptmoe --help` and each command start without torch, loading only what they run
    from ..interop.peft_format import export_peft

    out = export_peft(args.adapter, args.out, overwrite=args.overwrite)
    print(f"wrote PEFT adapter {out} (load with peft.PeftModel.from_pretrained(base_model, {str(out)!r}))")
    return 0
