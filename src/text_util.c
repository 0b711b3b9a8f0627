/*
 * text_util.c: text that comes from Odoo, made safe to store and to show.
 *
 * Odoo's messages (translated, so often not ASCII) are copied into
 * fixed-size buffers and into text columns.  A cut in the middle of a
 * UTF-8 sequence, or invalid bytes from a hostile server, would make the
 * text unstorable: writing it raises "invalid byte sequence", which must
 * never be what stops a worker.  So every such copy is made valid here, and
 * the secret is masked before any cut (a cut first could leave a fragment
 * of it that no longer matches).
 */
#include "bridgecore.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

/*
 * Length in bytes of the valid UTF-8 sequence at s (of at most len bytes),
 * or 0 when the bytes there are not one.
 */
int
bc_utf8_char_length(const unsigned char *s, size_t len)
{
	int			n = pg_utf_mblen(s);

	if ((size_t) n > len || !pg_utf8_islegal(s, n))
		return 0;
	return n;
}

/*
 * Rewrites the NUL-terminated s in place as valid UTF-8: every byte that
 * does not start a legal sequence becomes '?', and control characters but
 * tab and newline become spaces.  Never lengthens s.
 */
void
bc_make_valid_utf8(char *s)
{
	unsigned char *p = (unsigned char *) s;
	size_t		len = strlen(s);

	while (*p)
	{
		if (*p < 0x80)
		{
			if (*p < 0x20 && *p != '\t' && *p != '\n')
				*p = ' ';
			else if (*p == 0x7f)
				*p = ' ';
			p++;
			len--;
			continue;
		}
		{
			int			n = bc_utf8_char_length(p, len);

			if (n == 0)
			{
				*p++ = '?';
				len--;
			}
			else
			{
				p += n;
				len -= n;
			}
		}
	}
}

/*
 * The longest prefix of s, at most maxbytes bytes, that ends on a character
 * boundary (s is valid UTF-8).
 */
size_t
bc_utf8_clip_length(const char *s, size_t maxbytes)
{
	size_t		len = strlen(s);
	size_t		cut;

	if (len <= maxbytes)
		return len;
	cut = maxbytes;
	/* Back off continuation bytes (10xxxxxx) to the start of their character. */
	while (cut > 0 && (((unsigned char) s[cut]) & 0xC0) == 0x80)
		cut--;
	return cut;
}

/*
 * Copies src into dst (of size bytes): masks the secret first, makes the text
 * valid UTF-8, then cuts it at a character boundary.  src may be any length.
 */
void
bc_copy_message(char *dst, size_t size, const char *src, const char *secret)
{
	char	   *work = bc_scrubbed_copy(src, secret);
	size_t		n;

	bc_make_valid_utf8(work);
	n = bc_utf8_clip_length(work, size - 1);
	memcpy(dst, work, n);
	dst[n] = '\0';
	pfree(work);
}

/*
 * A palloc'd copy of s with every occurrence of secret replaced by "***".
 * Nothing is cut, so no fragment of a secret can survive a cut made here.
 */
char *
bc_scrubbed_copy(const char *s, const char *secret)
{
	StringInfoData out;
	size_t		slen = secret ? strlen(secret) : 0;
	const char *p = s;
	const char *hit;

	if (slen == 0)
		return pstrdup(s);
	initStringInfo(&out);
	while ((hit = strstr(p, secret)) != NULL)
	{
		appendBinaryStringInfo(&out, p, (int) (hit - p));
		appendStringInfoString(&out, "***");
		p = hit + slen;
	}
	appendStringInfoString(&out, p);
	return out.data;
}
