"""Convert Mooncake's FAST'25 conversation trace into the bundled pdscale CSV.

    python bench/import_mooncake_trace.py conversation_trace.jsonl   # writes simulator/data/traces/mooncake_conv.csv

Source: ``FAST25-release/traces/conversation_trace.jsonl`` in github.com/kvcache-ai/Mooncake (Apache-2.0):
12,031 requests sampled from one hour of Kimi's online conversation service, prompts averaging 12,035 tokens
(median 6,909, p90 27,367, max 126,195), outputs 343. Each row also lists the 512-token prefix blocks of its
prompt (``hash_ids``); 36.6% of all blocks were seen in an earlier request: multi-turn conversations resend
the previous turns' context. The CSV keeps arrival (seconds from the first request), prompt and output tokens;
the share of each prompt already seen goes to the ``cached_tokens`` column, which the simulator does not read
yet (it prefills every prompt in full, like an engine without prefix caching).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BLOCK_TOKENS = 512
OUT = Path(__file__).resolve().parents[1] / "simulator" / "data" / "traces" / "mooncake_conv.csv"


def main(src: str) -> None:
    """Write the CSV from the JSONL at ``src``."""
    seen: set[int] = set()
    rows = ["arrival_s,input_tokens,output_tokens"]
    cached_total = prompt_total = 0
    with open(src, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            blocks = r["hash_ids"]
            cached = 0
            for b in blocks:  # a prefix cache hits only while the blocks repeat from the start
                if b not in seen:
                    break
                cached += BLOCK_TOKENS
            seen.update(blocks)
            prompt = int(r["input_length"])
            cached_total += min(cached, prompt)
            prompt_total += prompt
            rows.append(f"{r['timestamp'] / 1000:.3f},{prompt},{int(r['output_length'])}")
    OUT.write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(rows) - 1} requests; prefix-cacheable prompt tokens {cached_total / prompt_total:.1%}")


if __name__ == "__main__":
    main(sys.argv[1])
